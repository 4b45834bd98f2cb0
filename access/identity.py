"""Who a person is, as the identity provider and SCIM say: users, group memberships and attributes by channel.

Three channels change group membership and user attributes: an administrator
(the web UI and ``/api/v1/admin``), the identity provider's claims (at every
OIDC sign-in and with every IdP bearer token) and SCIM provisioning.  Each
channel changes only what it set (``access.models.Source``): leaving a group
in the IdP removes the IdP's membership at the next sign-in, but never one an
administrator or SCIM gave.  ``user.groups`` — what permission checks read —
holds a group while any channel's membership row does.  Every change is
written to the audit log; nothing is cached, so it applies to the next request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction

from access.administration import (
    GROUP_NAME,
    InvalidAttributes,
    attributes_validate,
    membership_add,
    membership_remove,
)
from access.models import GroupMembership, Source, User
from access.services import Actor, audit_record

MAX_GROUPS_PER_USER = 500


class IdentityRefused(Exception):
    """A sign-in or token that names nobody Cairn may let in; the message says why (safe to show)."""


# --- group membership by channel --------------------------------------------------------------


def _group_named(actor: Actor, name: str) -> Group | None:
    """The group of that name, created on first sight; None for a name Cairn cannot hold."""
    name = name.strip()
    if not GROUP_NAME.match(name):
        return None
    group = Group.objects.filter(name=name).first()
    if group is not None:
        return group
    try:
        with transaction.atomic():
            group = Group.objects.create(name=name)
    except IntegrityError:  # created meanwhile by another request
        return Group.objects.filter(name=name).first()
    audit_record(actor=actor, action="group.create", target_type="group", target_id=group.pk,
                 detail={"name": name, "source": "idp"})
    return group


def memberships_sync(*, actor: Actor, user: User, names: Iterable[str], source: Source) -> bool:
    """Make ``source``'s memberships of ``user`` exactly the groups ``names``; True when anything changed."""
    wanted: dict[int, Group] = {}
    for name in list(names)[:MAX_GROUPS_PER_USER]:
        group = _group_named(actor, name)
        if group is not None:
            wanted[group.pk] = group
    held = {row.group_id: row.group for row in
            GroupMembership.objects.filter(user=user, source=source).select_related("group")}
    changed = False
    for pk in wanted.keys() - held.keys():
        changed |= membership_add(actor=actor, user=user, group=wanted[pk], source=source)
    for pk in held.keys() - wanted.keys():
        changed |= membership_remove(actor=actor, user=user, group=held[pk], source=source)
    return changed


# --- attributes by channel --------------------------------------------------------------------


def attributes_merge(*, actor: Actor, user: User, values: Mapping[str, Any], owned: Iterable[str],
                     source: Source) -> bool:
    """Set the attributes ``owned`` by ``source`` to ``values`` (absent there: removed).

    An attribute another channel set (an administrator, say) is left as it
    is: the channel that set it owns it until that channel removes it.
    Invalid values (a clearance that is not a level, …) raise ``InvalidAttributes``.
    """
    attributes = dict(user.attributes or {})
    sources = dict(user.attribute_sources or {})
    changed = False
    for name in owned:
        if name in attributes and sources.get(name, Source.ADMIN) != source:
            continue
        if name in values and values[name] not in (None, "", []):
            if attributes.get(name) != values[name] or sources.get(name) != source:
                attributes[name] = values[name]
                sources[name] = str(source)
                changed = True
        elif name in attributes:
            del attributes[name]
            sources.pop(name, None)
            changed = True
    if not changed:
        return False
    clean = attributes_validate(attributes)
    with transaction.atomic():
        user.attributes = clean
        user.attribute_sources = {name: sources.get(name, str(Source.ADMIN)) for name in clean}
        user.save(update_fields=["attributes", "attribute_sources"])
        audit_record(actor=actor, action="user.attributes", target_type="user", target_id=user.pk,
                     detail={"username": user.get_username(), "attributes": clean, "source": str(source)})
    return True


# --- the identity provider's claims -----------------------------------------------------------


@dataclass(frozen=True)
class ClaimMapping:
    """How the IdP's claims become a Cairn user (the ``CAIRN_OIDC_*`` settings)."""

    issuer: str
    username_claim: str
    groups_claim: str
    attribute_claims: Mapping[str, str]  # ABAC attribute → claim

    @classmethod
    def from_settings(cls) -> ClaimMapping:
        return cls(issuer=str(settings.CAIRN_OIDC_ISSUER), username_claim=settings.CAIRN_OIDC_USERNAME_CLAIM,
                   groups_claim=settings.CAIRN_OIDC_GROUPS_CLAIM,
                   attribute_claims=dict(settings.CAIRN_OIDC_ATTRIBUTE_CLAIMS))

    def subject(self, claims: Mapping[str, Any]) -> str:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise IdentityRefused("The identity provider sent no usable subject (sub).")
        return f"{self.issuer} {sub}"

    def username(self, claims: Mapping[str, Any]) -> str:
        value = claims.get(self.username_claim)
        if not isinstance(value, str) or not value.strip() or len(value) > 150:
            raise IdentityRefused(f"The identity provider sent no usable {self.username_claim} claim.")
        return value.strip()

    def groups(self, claims: Mapping[str, Any]) -> list[str] | None:
        """The group names in the claims; None when the claim is absent (memberships are left alone)."""
        value = claims.get(self.groups_claim)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return []
        # Entra ID and Keycloak may send paths ("/staff/finance"): the last part names the group.
        return [str(item).rstrip("/").rsplit("/", 1)[-1] for item in value if isinstance(item, str | int)]

    def attributes(self, claims: Mapping[str, Any]) -> dict[str, Any]:
        return {attribute: claims[claim] for attribute, claim in self.attribute_claims.items() if claim in claims}


def idp_user_sync(claims: Mapping[str, Any], *, mapping: ClaimMapping, actor: Actor) -> User:
    """The Cairn user the IdP's claims name — created on first sight — with groups and attributes synchronised.

    A user is matched by the IdP subject, else (first sign-in of a user SCIM
    or an admin created) by username when that user has no other subject.
    A deactivated user is refused (``IdentityRefused``).
    """
    subject = mapping.subject(claims)
    username = mapping.username(claims)
    with transaction.atomic():
        user = User.objects.select_for_update().filter(idp_subject=subject).first()
        if user is None:
            user = User.objects.select_for_update().filter(username=username).first()
            if user is not None and user.idp_subject and user.idp_subject != subject:
                raise IdentityRefused("This username belongs to another identity-provider account.")
            if user is None:
                user = User(username=username)
                user.set_unusable_password()
                user.idp_subject = subject
                user.save()
                audit_record(actor=Actor(user=user, ip=actor.ip, request_id=actor.request_id),
                             action="user.create", target_type="user", target_id=user.pk,
                             detail={"username": username, "source": "idp", "subject": subject})
            elif not user.idp_subject:
                user.idp_subject = subject
                user.save(update_fields=["idp_subject"])
        if not user.is_active:
            raise IdentityRefused("This account is deactivated.")
        as_user = Actor(user=user, ip=actor.ip, request_id=actor.request_id, api_key_prefix=actor.api_key_prefix)
        groups = mapping.groups(claims)
        if groups is not None:
            memberships_sync(actor=as_user, user=user, names=groups, source=Source.IDP)
        try:
            attributes_merge(actor=as_user, user=user, values=mapping.attributes(claims),
                             owned=mapping.attribute_claims.keys(), source=Source.IDP)
        except InvalidAttributes as error:
            raise IdentityRefused(f"The identity provider sent an attribute Cairn cannot use: {error}") from None
    return user


__all__ = [
    "ClaimMapping", "IdentityRefused", "attributes_merge", "idp_user_sync", "membership_add",
    "membership_remove", "memberships_sync",
]
