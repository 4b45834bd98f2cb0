"""SCIM 2.0 provisioning (RFC 7643/7644): what an identity provider may create, read, change and delete.

The wire format — parsing, validation, PATCH, filters, errors — is
``scim2-models``; this module maps its ``User`` and ``Group`` resources onto
Cairn's users, groups and memberships, and publishes exactly the attributes
it keeps (so a client never sends something that would be dropped):

``User``: ``userName``, ``name`` (formatted, givenName, familyName),
``displayName``, ``active``, ``emails``, ``externalId``, ``groups``
(read-only) and the enterprise extension's ``department``, ``organization``
and ``division``, which become ABAC attributes of the same names owned by
SCIM.  ``Group``: ``displayName``, ``externalId`` and ``members`` (users
only: Cairn groups do not nest).

Channels: SCIM changes only what SCIM set.  A group's ``members`` are the
memberships SCIM gave; a membership an administrator or the IdP's sign-in
claims gave stays whatever SCIM does.  Deactivating (``active: false``) stops
the user's sessions, API keys and bearer tokens on their next request;
deleting also drops every membership and revokes their keys (the row stays,
see ``User.deprovisioned_at``).  Every write is audited.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Annotated, Any, ClassVar, Union

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from pydantic import Field
from scim2_models import (
    URN,
    CaseExact,
    ComplexAttribute,
    Extension,
    InvalidValueException,
    Meta,
    Mutability,
    NotFoundException,
    Reference,
    Required,
    Resource,
    ResourceType,
    Schema,
    Uniqueness,
    UniquenessException,
)
from scim2_models import (
    Group as _StandardGroup,
)
from scim2_models import (
    GroupMembership as ScimGroupRef,
)
from scim2_models.resources.user import Email

from access.administration import GROUP_NAME, InvalidAttributes, membership_add, membership_remove
from access.identity import attributes_merge
from access.models import ApiKey, GroupMembership, GroupRecord, Source, User
from access.services import Actor, audit_record

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
# Enterprise-extension attributes that become ABAC user attributes (same names), owned by SCIM.
ENTERPRISE_ATTRIBUTES = ("department", "organization", "division")
MAX_EMAILS = 10
MAX_MEMBERS = 10_000
MAX_TEXT = 255
_username = UnicodeUsernameValidator()


# --- the resources Cairn serves ----------------------------------------------------------------


class ScimName(ComplexAttribute):
    formatted: str | None = None
    family_name: str | None = None
    given_name: str | None = None


class ScimEmail(ComplexAttribute):
    value: str | None = None
    type: Email.Type | None = None
    primary: bool | None = None


class ScimEnterprise(Extension):
    __schema__ = URN(ENTERPRISE_USER)

    department: str | None = None
    organization: str | None = None
    division: str | None = None


class ScimUser(Resource[ScimEnterprise]):
    __schema__ = URN(CORE_USER)

    user_name: Annotated[str | None, Uniqueness.server, Required.true] = None
    name: ScimName | None = None
    Name: ClassVar[type[ComplexAttribute]] = ScimName
    display_name: str | None = None
    active: bool | None = None
    emails: list[ScimEmail] | None = None
    Emails: ClassVar[type[ComplexAttribute]] = ScimEmail
    groups: Annotated[list[ScimGroupRef] | None, Mutability.read_only] = None
    Groups: ClassVar[type[ComplexAttribute]] = ScimGroupRef


class ScimGroupMember(ComplexAttribute):
    """A member of a group: a user (``value`` is its id).

    ``display`` is accepted (IdPs send it) and ignored: a member's name is
    its user's, which ``GET /Users/<value>`` gives.
    """

    value: Annotated[str | None, Mutability.immutable, CaseExact.true] = None
    ref: Annotated[Reference[Union["User", "Group"]] | None, Mutability.immutable] = Field(  # noqa: F821, UP007, UP037
        None, serialization_alias="$ref", validation_alias="$ref")
    type: Annotated[str | None, Mutability.immutable] = Field(None, examples=["User"])
    display: Annotated[str | None, Mutability.read_only] = None


class ScimGroup(Resource[Any]):
    __schema__ = URN(CORE_GROUP)

    display_name: Annotated[str | None, Required.true] = None
    members: list[ScimGroupMember] | None = None
    Members: ClassVar[type[ComplexAttribute]] = ScimGroupMember


assert _StandardGroup.__schema__ == CORE_GROUP  # the standard names we answer to


def schemas() -> list[Schema]:
    """The schemas Cairn publishes at ``/Schemas``: exactly the attributes it keeps."""
    published = []
    for model, name, description in ((ScimUser, "User", "User Account"), (ScimGroup, "Group", "Group"),
                                     (ScimEnterprise, "EnterpriseUser", "Enterprise User")):
        schema = model.to_schema()
        schema.name, schema.description = name, description
        published.append(schema)
    return published


def resource_types() -> list[ResourceType]:
    return [ResourceType.from_resource(ScimUser), ResourceType.from_resource(ScimGroup)]


# --- reading -----------------------------------------------------------------------------------


def users() -> QuerySet[User]:
    """The users SCIM can see: all but those it deleted (and django-guardian's internal anonymous user)."""
    anonymous = getattr(settings, "ANONYMOUS_USER_NAME", "AnonymousUser")
    # Groups prefetched: every listed user's resource names them (one query a page, not one a user).
    return (User.objects.filter(deprovisioned_at__isnull=True).exclude(username=anonymous).order_by("pk")
            .prefetch_related("groups"))


def groups() -> QuerySet[Group]:
    return Group.objects.order_by("pk")


def user_get(resource_id: str) -> User:
    if not resource_id.isdigit() or len(resource_id) > 18:
        raise NotFoundException(detail=f"No user {resource_id[:40]!r}.")
    user = users().filter(pk=int(resource_id)).first()
    if user is None:
        raise NotFoundException(detail=f"No user {resource_id}.")
    return user


def group_get(resource_id: str) -> Group:
    if not resource_id.isdigit() or len(resource_id) > 18:
        raise NotFoundException(detail=f"No group {resource_id[:40]!r}.")
    group = groups().filter(pk=int(resource_id)).first()
    if group is None:
        raise NotFoundException(detail=f"No group {resource_id}.")
    return group


def user_resource(user: User, base_url: str) -> ScimUser:
    profile = user.scim_profile or {}
    name = ScimName(formatted=profile.get("formatted") or None, given_name=user.first_name or None,
                    family_name=user.last_name or None)
    if profile.get("emails") is not None:
        emails = [ScimEmail.model_validate(item) for item in profile["emails"]]
    else:
        emails = [ScimEmail(value=user.email, primary=True)] if user.email else []
    attributes, sources = user.attributes or {}, user.attribute_sources or {}
    enterprise = {name: attributes[name] for name in ENTERPRISE_ATTRIBUTES
                  if name in attributes and sources.get(name) == Source.SCIM and isinstance(attributes[name], str)}
    resource = ScimUser(
        id=str(user.pk), external_id=user.external_id or None, user_name=user.get_username(),
        name=name if (name.formatted or name.given_name or name.family_name) else None,
        display_name=profile.get("displayName") or None, emails=emails or None,
        # Left out when SCIM never set it (or removed it) and the user is active, as Cairn reads "unset".
        active=None if (profile.get("active", True) is None and user.is_active) else user.is_active,
        groups=[ScimGroupRef(value=str(group.pk), display=group.name, ref=None, type=None) for group in sorted(user.groups.all(), key=lambda g: g.pk)]
        or None,
        meta=Meta(resource_type="User", created=user.date_joined,
                  last_modified=_modified(profile, user.date_joined), location=f"{base_url}/Users/{user.pk}"),
    )
    if enterprise:
        resource[ScimEnterprise] = ScimEnterprise(**enterprise)
    return resource


def group_resource(group: Group, base_url: str) -> ScimGroup:
    record = GroupRecord.objects.filter(group=group).first()
    members = GroupMembership.objects.filter(group=group, source=Source.SCIM).order_by("user_id")
    created = record.created_at if record else timezone.now()
    return ScimGroup(
        id=str(group.pk), external_id=(record.external_id or None) if record else None, display_name=group.name,
        members=[ScimGroupMember(value=str(row.user_id), type="User",
                                  ref=Reference(f"{base_url}/Users/{row.user_id}")) for row in members] or None,
        meta=Meta(resource_type="Group", created=created, last_modified=record.modified_at if record else created,
                  location=f"{base_url}/Groups/{group.pk}"),
    )


def _modified(profile: dict[str, Any], default: Any) -> Any:
    stamp = profile.get("lastModified")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp)
        except ValueError:
            return default
    return default


# Equality on an indexed column, the filter every IdP sends to find an existing user or group.
_EQUALITY = re.compile(r'^\s*(userName|externalId|id|displayName)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.IGNORECASE)


def indexed_equality(filter_text: str) -> tuple[str, str] | None:
    match = _EQUALITY.match(filter_text)
    if not match:
        return None
    value = re.sub(r"\\(.)", r"\1", match.group(2))
    return match.group(1).lower(), value


def users_filtered(query: tuple[str, str] | None) -> QuerySet[User]:
    rows = users()
    if query is None:
        return rows
    attribute, value = query
    if attribute == "username":
        return rows.filter(username__iexact=value)
    if attribute == "externalid":
        return rows.filter(external_id=value) if value else rows.none()
    if attribute == "id":
        return rows.filter(pk=int(value)) if value.isdigit() and len(value) <= 18 else rows.none()
    return rows.filter(scim_profile__displayName=value)


def groups_filtered(query: tuple[str, str] | None) -> QuerySet[Group]:
    rows = groups()
    if query is None:
        return rows
    attribute, value = query
    if attribute == "displayname":
        return rows.filter(name__iexact=value)
    if attribute == "externalid":
        return rows.filter(record__external_id=value) if value else rows.none()
    if attribute == "id":
        return rows.filter(pk=int(value)) if value.isdigit() and len(value) <= 18 else rows.none()
    return rows.none()  # userName on groups: no such attribute, matches nothing (RFC 7644 §3.4.2.1)


# --- writing -----------------------------------------------------------------------------------


def _text(value: str | None, what: str, limit: int = MAX_TEXT) -> str:
    value = (value or "").strip()
    if len(value) > limit:
        raise InvalidValueException(detail=f"{what} is longer than {limit} characters.")
    return value


def _emails(resource: ScimUser) -> tuple[list[dict[str, Any]], str]:
    emails = resource.emails or []
    if len(emails) > MAX_EMAILS:
        raise InvalidValueException(detail=f"At most {MAX_EMAILS} e-mail addresses.")
    for email in emails:
        try:
            validate_email(email.value or "")
        except ValidationError:
            raise InvalidValueException(detail=f"{str(email.value)[:80]!r} is not an e-mail address.") from None
    primary = next((e.value for e in emails if e.primary), emails[0].value if emails else "")
    return [e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in emails], primary or ""


def user_save(*, actor: Actor, resource: ScimUser, user: User | None) -> User:
    """Create (``user`` None) or replace a user from a validated SCIM resource."""
    username = _text(resource.user_name, "userName", 150)
    try:
        _username(username)
    except ValidationError:
        raise InvalidValueException(
            detail="userName may hold letters, digits and @ . + - _ only (1–150 characters).") from None
    if not username:
        raise InvalidValueException(detail="userName is required.")
    clash = User.objects.filter(username__iexact=username)
    if user is not None:
        clash = clash.exclude(pk=user.pk)
    elif (gone := clash.filter(deprovisioned_at__isnull=False).first()) is not None:
        user, clash = gone, clash.exclude(pk=gone.pk)  # SCIM deleted them earlier: the same person is back
    if clash.exists():
        raise UniquenessException(detail=f"A user named {username!r} exists already.")
    emails, primary = _emails(resource)
    name = resource.name or ScimName()
    created = user is None or user.deprovisioned_at is not None
    was_active = user.is_active if user is not None and user.deprovisioned_at is None else None
    with transaction.atomic():
        if user is None:
            user = User(username=username)
        user.username = username
        user.first_name = _text(name.given_name, "name.givenName", 150)
        user.last_name = _text(name.family_name, "name.familyName", 150)
        user.email = primary
        user.external_id = _text(resource.external_id, "externalId")
        user.is_active = True if resource.active is None else bool(resource.active)
        user.deprovisioned_at = None
        user.scim_profile = {"displayName": _text(resource.display_name, "displayName") or None,
                             "formatted": _text(name.formatted, "name.formatted") or None,
                             "emails": emails, "active": resource.active,
                             "lastModified": timezone.now().isoformat()}
        if user.pk is None:
            user.set_unusable_password()  # signs in through the identity provider
        try:
            with transaction.atomic():
                user.save()
        except IntegrityError:
            raise UniquenessException(detail=f"A user named {username!r} exists already.") from None
        enterprise = resource[ScimEnterprise]
        values = {name: getattr(enterprise, name, None) for name in ENTERPRISE_ATTRIBUTES} if enterprise else {}
        try:
            attributes_merge(actor=actor, user=user, values=values, owned=ENTERPRISE_ATTRIBUTES, source=Source.SCIM)
        except InvalidAttributes as error:
            raise InvalidValueException(detail=str(error)) from None
        action = "user.create" if created else "user.update"
        audit_record(actor=actor, action=action, target_type="user", target_id=user.pk,
                     detail={"username": username, "source": "scim", "active": user.is_active})
        if was_active is not None and was_active != user.is_active:
            audit_record(actor=actor, action="user.activate" if user.is_active else "user.deactivate",
                         target_type="user", target_id=user.pk, detail={"username": username, "source": "scim"})
    return user


def user_delete(*, actor: Actor, user: User) -> None:
    """SCIM DELETE: deactivate, drop every membership, revoke every key; the row stays for what it owns."""
    with transaction.atomic():
        for row in list(GroupMembership.objects.filter(user=user).select_related("group")):
            membership_remove(actor=actor, user=user, group=row.group, source=Source(row.source))
        user.groups.clear()
        revoked = ApiKey.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())
        user.is_active = False
        user.deprovisioned_at = timezone.now()
        user.save(update_fields=["is_active", "deprovisioned_at"])
        audit_record(actor=actor, action="user.delete", target_type="user", target_id=user.pk,
                     detail={"username": user.get_username(), "source": "scim", "keys_revoked": revoked})


def _member_users(members: Iterable[ScimGroupMember]) -> dict[int, User]:
    wanted: set[int] = set()
    members = list(members)
    if len(members) > MAX_MEMBERS:
        raise InvalidValueException(detail=f"At most {MAX_MEMBERS} members per request.")
    for member in members:
        if member.type not in (None, "User"):
            raise InvalidValueException(detail="Cairn groups hold users only; groups do not nest.")
        value = str(member.value or "")
        if not value.isdigit() or len(value) > 18:
            raise InvalidValueException(detail=f"No user {value[:40]!r}.")
        wanted.add(int(value))
    found = {user.pk: user for user in users().filter(pk__in=wanted)}
    missing = wanted - found.keys()
    if missing:
        raise InvalidValueException(detail=f"No user {min(missing)}.")
    return found


def group_save(*, actor: Actor, resource: ScimGroup, group: Group | None) -> Group:
    """Create (``group`` None) or replace a group; ``members`` become SCIM's memberships of it."""
    name = _text(resource.display_name, "displayName", 150)
    if not GROUP_NAME.match(name):
        raise InvalidValueException(detail="displayName is 1–150 letters, digits, spaces or . @ + - _.")
    clash = Group.objects.filter(name__iexact=name)
    if group is not None:
        clash = clash.exclude(pk=group.pk)
    if clash.exists():
        raise UniquenessException(detail=f"A group named {name!r} exists already.")
    wanted = _member_users(resource.members or [])
    with transaction.atomic():
        created = group is None
        if group is None:
            group = Group(name=name)
        previous = group.name
        group.name = name
        try:
            with transaction.atomic():
                group.save()
        except IntegrityError:
            raise UniquenessException(detail=f"A group named {name!r} exists already.") from None
        record, _ = GroupRecord.objects.get_or_create(group=group)
        record.external_id = _text(resource.external_id, "externalId")
        record.modified_at = timezone.now()
        record.save()
        held = {row.user_id: row.user for row in
                GroupMembership.objects.filter(group=group, source=Source.SCIM).select_related("user")}
        for pk in wanted.keys() - held.keys():
            membership_add(actor=actor, user=wanted[pk], group=group, source=Source.SCIM)
        for pk in held.keys() - wanted.keys():
            membership_remove(actor=actor, user=held[pk], group=group, source=Source.SCIM)
        audit_record(actor=actor, action="group.create" if created else "group.update", target_type="group",
                     target_id=group.pk, detail={"name": name, "previous": previous, "source": "scim",
                                                 "members": len(wanted)})
    return group


def group_delete(*, actor: Actor, group: Group) -> None:
    """SCIM DELETE of a group: it goes, with every membership and every share made to it."""
    with transaction.atomic():
        members = list(group.user_set.values_list("pk", flat=True))
        audit_record(actor=actor, action="group.delete", target_type="group", target_id=group.pk,
                     detail={"name": group.name, "source": "scim", "members": len(members)})
        group.delete()


def iterate(rows: QuerySet[Any], chunk: int = 500) -> Iterator[Any]:
    return rows.iterator(chunk_size=chunk)


__all__ = [
    "CORE_GROUP", "CORE_USER", "ENTERPRISE_USER", "ScimEnterprise", "ScimGroup", "ScimUser", "group_delete",
    "group_get", "group_resource", "group_save", "groups", "groups_filtered", "indexed_equality", "iterate",
    "resource_types", "schemas", "user_delete", "user_get", "user_resource", "user_save", "users",
    "users_filtered",
]
