"""Reads of the access app: the ABAC policies that apply to a set of collections."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import Group
from django.db.models import OuterRef, QuerySet, Subquery

from access.models import ApiKey, GroupMembership, User
from access.models import Policy as PolicyRow
from access.policy import Policy, PolicyError

log = logging.getLogger(__name__)

# A request authenticated by an API key limited to some collections carries the limit on its user
# object (set by ``access.authentication``; that object lives for one request only).
_KEY_COLLECTIONS = "_cairn_key_collections"


def key_collection_limit(user: object) -> frozenset[int] | None:
    """The collections the request's API key is limited to, or None when it is not limited."""
    limit = getattr(user, _KEY_COLLECTIONS, None)
    return limit if isinstance(limit, frozenset) else None


def key_collection_limit_set(user: User, collection_ids: Iterable[int]) -> None:
    setattr(user, _KEY_COLLECTIONS, frozenset(int(pk) for pk in collection_ids))


def _parsed(scope: str, source: str) -> Policy | None:
    try:
        return Policy.parse(source)
    except PolicyError:
        # Saved policies were validated; one that no longer parses denies everything.
        log.error("stored policy %s does not parse; it denies every document", scope)
        return None


Policies = tuple[Policy | None, dict[int, Policy | None], bool]


def ids_with_policies(collections: QuerySet[Any]) -> tuple[list[int], Policies]:
    """The ids of ``collections`` and the policies that govern them, in one query.

    Policies: (platform policy, {collection id: policy}, whether a platform
    policy exists).  The read decision needs both (``kb.selectors``); each row
    carries its collection's policy source and the platform's (a policy's
    source is never empty, so NULL means none).  Read from the database on
    every call: a policy change applies to the very next request.  A stored
    policy that fails to parse maps to None (deny everything it governs).
    """
    platform_source = PolicyRow.objects.filter(scope=PolicyRow.PLATFORM).values("source")[:1]
    own_source = (PolicyRow.objects.filter(collection_id=OuterRef("pk")).exclude(scope=PolicyRow.PLATFORM)
                  .order_by("pk").values("source")[:1])
    rows = list(collections.order_by("pk").annotate(_own=Subquery(own_source), _platform=Subquery(platform_source))
                .values_list("pk", "_own", "_platform"))
    ids = [pk for pk, _, _ in rows]
    per_collection = {pk: _parsed(PolicyRow.collection_scope(pk), own) for pk, own, _ in rows if own is not None}
    platform = rows[0][2] if rows else None
    if platform is None:
        return ids, (None, per_collection, False)
    return ids, (_parsed(PolicyRow.PLATFORM, platform), per_collection, True)


def policy_source(scope: str) -> str:
    return PolicyRow.objects.filter(scope=scope).values_list("source", flat=True).first() or ""


def api_keys_visible(user: User, *, everyone: bool = False) -> QuerySet[ApiKey]:
    """The keys ``user`` may list and revoke: their own; every user's for a platform admin who asks."""
    keys = ApiKey.objects.select_related("user").order_by("-created_at", "-pk")
    if everyone and user.is_platform_admin:
        return keys
    return keys.filter(user=user)


def user_by_username(username: str) -> User | None:
    return User.objects.filter(username=username, is_active=True).first()


def group_by_name(name: str) -> Group | None:
    return Group.objects.filter(name=name).first()


def groups_with_members() -> list[tuple[Group, list[str]]]:
    groups = Group.objects.order_by("name").prefetch_related("user_set")
    return [(group, sorted(u.get_username() for u in group.user_set.all())) for group in groups]


ADMIN_USER_LIST_LIMIT = 500


def users_for_admin(*, limit: int = ADMIN_USER_LIST_LIMIT) -> list[User]:
    """Active users (alphabetical, at most ``limit``) with their groups, for the administration page."""
    return list(User.objects.filter(is_active=True).order_by("username").prefetch_related("groups")[:limit])


def group_memberships(group: Group) -> list[tuple[str, list[str]]]:
    """``(username, [channels])`` of each member: which of admin / idp / scim put them in the group."""
    channels: dict[str, list[str]] = {}
    rows = GroupMembership.objects.filter(group=group).order_by("user__username", "source")
    for username, source in rows.values_list("user__username", "source"):
        channels.setdefault(username, []).append(source)
    for username in group.user_set.values_list("username", flat=True):  # memberships older than the channels
        channels.setdefault(username, [])
    return sorted(channels.items())
