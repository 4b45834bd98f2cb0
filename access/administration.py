"""Writes an administrator (or a collection owner) makes to the permission model.

User attributes, group membership and ABAC policies.  Each change is
validated at the edge of this module and written to the audit log; none is
cached anywhere, so it applies to the very next request.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from access.models import GroupMembership, GroupRecord, Source, User
from access.models import Policy as PolicyRow
from access.policy import LEVEL_ATTRIBUTES, LEVELS, Policy, PolicyError
from access.services import Actor, audit_record

ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_ATTRIBUTES = 50
MAX_LIST_ITEMS = 200
MAX_STRING = 500
GROUP_NAME = re.compile(r"^[\w .@+-]{1,150}$")


class InvalidAttributes(ValueError):
    """Attributes a policy could not use; the message says which and why."""


def attributes_validate(attributes: Any) -> dict[str, Any]:
    """Attributes are a JSON object of NAME → string | number | list of strings/numbers.

    ``sensitivity`` and ``clearance`` must be one of the levels
    public < internal < confidential < secret.
    """
    if not isinstance(attributes, dict):
        raise InvalidAttributes("Attributes must be a JSON object.")
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidAttributes(f"At most {MAX_ATTRIBUTES} attributes.")
    clean: dict[str, Any] = {}
    for name, value in attributes.items():
        if not isinstance(name, str) or not ATTRIBUTE_NAME.match(name):
            raise InvalidAttributes(f"{str(name)[:70]!r} is not an attribute name (letters, digits, _; not first a digit).")
        clean[name] = _attribute_value(name, value)
    return clean


def _scalar(name: str, value: Any) -> str | int | float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidAttributes(f"{name}: values are strings, numbers or lists of them.")
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise InvalidAttributes(f"{name}: strings can be at most {MAX_STRING} characters.")
    if isinstance(value, float) and (value != value or abs(value) == float("inf")):
        raise InvalidAttributes(f"{name}: numbers must be finite.")
    return value


def _attribute_value(name: str, value: Any) -> Any:
    if isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            raise InvalidAttributes(f"{name}: a list can hold at most {MAX_LIST_ITEMS} items.")
        return [_scalar(name, item) for item in value]
    scalar = _scalar(name, value)
    if name in LEVEL_ATTRIBUTES and scalar not in LEVELS:
        raise InvalidAttributes(f"{name} must be one of {', '.join(LEVELS)}.")
    return scalar


def user_attributes_set(*, actor: Actor, user: User, attributes: Any) -> User:
    """Replace a user's ABAC attributes (an admin's decision, or the IdP's claims)."""
    clean = attributes_validate(attributes)
    with transaction.atomic():
        previous = dict(user.attributes or {})
        before = sorted(previous)
        # A value the administrator sets or changes is theirs until they remove it (access.identity);
        # one left as it was keeps the channel that set it.
        sources = dict(user.attribute_sources or {})
        user.attribute_sources = {
            name: sources.get(name, Source.ADMIN.value) if name in previous and previous[name] == value
            else Source.ADMIN.value
            for name, value in clean.items()
        }
        user.attributes = clean
        user.save(update_fields=["attributes", "attribute_sources"])
        audit_record(actor=actor, action="user.attributes", target_type="user", target_id=user.pk,
                     detail={"username": user.get_username(), "attributes": clean, "previous_keys": before})
    return user


def group_create(*, actor: Actor, name: str) -> Group:
    name = name.strip()
    if not GROUP_NAME.match(name):
        raise InvalidAttributes("A group name is 1–150 letters, digits, spaces or . @ + - _.")
    with transaction.atomic():
        group, created = Group.objects.get_or_create(name=name)
        if created:
            audit_record(actor=actor, action="group.create", target_type="group", target_id=group.pk,
                         detail={"name": name})
    return group


class GroupManaged(ValueError):
    """A group the SCIM client provisions: it is deleted there, not here (the next sync would bring it back)."""


def group_scim_managed(group: Group) -> bool:
    """True when SCIM provisions the group (it has a SCIM record or SCIM-given members)."""
    return (GroupRecord.objects.filter(group=group).exclude(external_id="").exists()
            or GroupMembership.objects.filter(group=group, source=Source.SCIM).exists())


def group_delete(*, actor: Actor, group: Group) -> None:
    """Delete a group: its members lose what it was shared, at their next request.

    Collection grants to the group go with it (``kb`` deletes them through
    the cascade of django-guardian's group object permissions).  A
    SCIM-provisioned group is refused with ``GroupManaged``: delete it in the
    identity provider.
    """
    if group_scim_managed(group):
        raise GroupManaged(f"{group.name} is provisioned by SCIM: remove it in your identity provider.")
    with transaction.atomic():
        members = sorted(group.user_set.values_list("username", flat=True))
        group_id, name = group.pk, group.name
        group.delete()
        audit_record(actor=actor, action="group.delete", target_type="group", target_id=group_id,
                     detail={"name": name, "members": members[:200], "member_count": len(members)})


def _resync(user: User, group: Group) -> None:
    """``user.groups`` holds ``group`` exactly while some channel's membership row does."""
    if GroupMembership.objects.filter(user=user, group=group).exists():
        user.groups.add(group)
    else:
        user.groups.remove(group)


def membership_add(*, actor: Actor, user: User, group: Group, source: Source) -> bool:
    """Record that ``source`` puts ``user`` in ``group``; True when the row is new."""
    with transaction.atomic():
        _, created = GroupMembership.objects.get_or_create(user=user, group=group, source=source)
        _resync(user, group)
        if created:
            audit_record(actor=actor, action="group.member_add", target_type="group", target_id=group.pk,
                         detail={"group": group.name, "user_id": user.pk, "username": user.get_username(),
                                 "source": str(source)})
    return created


def membership_remove(*, actor: Actor, user: User, group: Group, source: Source) -> bool:
    """Withdraw ``source``'s membership; the user stays in the group if another channel put them there."""
    with transaction.atomic():
        deleted, _ = GroupMembership.objects.filter(user=user, group=group, source=source).delete()
        _resync(user, group)
        if deleted:
            audit_record(actor=actor, action="group.member_remove", target_type="group", target_id=group.pk,
                         detail={"group": group.name, "user_id": user.pk, "username": user.get_username(),
                                 "source": str(source), "still_member": user.groups.filter(pk=group.pk).exists()})
    return bool(deleted)


def group_member_add(*, actor: Actor, group: Group, user: User) -> None:
    """An administrator puts ``user`` in ``group`` (alongside any IdP or SCIM membership)."""
    membership_add(actor=actor, user=user, group=group, source=Source.ADMIN)


def group_member_remove(*, actor: Actor, group: Group, user: User) -> None:
    """Withdraw the administrator's membership; takes effect on the user's next request.

    A membership the identity provider or SCIM gives stays: remove the user
    from the group there (``access.identity``).
    """
    membership_remove(actor=actor, user=user, group=group, source=Source.ADMIN)


def policy_set(*, actor: Actor, scope: str, source: str, collection_id: int | None = None) -> PolicyRow | None:
    """Save (or with an empty source, remove) the policy of a scope.

    Raises ``PolicyError`` — with the position of the problem — for a policy
    that does not parse; nothing is saved then.
    """
    source = source.strip()
    with transaction.atomic():
        if not source:
            deleted, _ = PolicyRow.objects.filter(scope=scope).delete()
            audit_record(actor=actor, action="policy.clear", target_type="policy", target_id=scope,
                         detail={"removed": bool(deleted)})
            return None
        Policy.parse(source)  # PolicyError propagates: rejected on save
        row, _ = PolicyRow.objects.update_or_create(
            scope=scope,
            defaults={"source": source, "collection_id": collection_id, "updated_at": timezone.now(),
                      "updated_by": actor.user},
        )
        audit_record(actor=actor, action="policy.set", target_type="policy", target_id=scope,
                     detail={"source": source})
    return row


__all__ = [
    "GroupManaged", "InvalidAttributes", "PolicyError", "attributes_validate", "group_create", "group_delete",
    "group_member_add", "group_scim_managed",
    "group_member_remove", "membership_add", "membership_remove", "policy_set", "user_attributes_set",
]
