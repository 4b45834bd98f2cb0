"""Writes of the knowledge base: collections, document versions, deletion, sharing, attributes.

Every service takes the acting user explicitly, checks it against the
selectors' scopes, and writes an audit event.  What happens next in the
pipeline (an ingestion job for a new version, compaction after a delete) is
``ingestion.services``' part: it calls these inside its own transaction.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from access.models import User
from access.services import Actor, audit_record
from kb.exceptions import InvalidInput, InvalidPolicy, NotFound
from kb.models import Collection, Document, DocumentVersion, IdBlock
from kb.storage import StoredBlob, blob_delete

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def display_name(filename: str) -> str:
    """A filename made safe to *display*: the last path component, no control characters.

    It is never used as a path (storage is content-addressed); this only
    keeps ``../../etc/passwd`` from showing up as a title.  A name with NUL
    or other control characters is refused outright: no legitimate client
    sends one.
    """
    if _CONTROL.search(filename):
        raise InvalidInput(_("The file name contains control characters (such as NUL)."))
    name = unicodedata.normalize("NFC", filename).replace("\\", "/").split("/")[-1].strip()
    name = name.lstrip(".") or "untitled"
    return name[:255]


def collection_create(*, actor: Actor, owner: User, name: str, description: str = "") -> Collection:
    name = name.strip()
    if not name:
        raise InvalidInput(_("A collection needs a name."))
    if len(name) > 200:
        raise InvalidInput(_("A collection name can be at most 200 characters."))
    collection = Collection.objects.create(name=name, description=description.strip()[:5000], owner=owner)
    audit_record(actor=actor, action="collection.create", target_type="collection", target_id=collection.pk,
                 detail={"name": name})
    return collection


def collection_update(*, actor: Actor, collection: Collection, name: str | None = None,
                      description: str | None = None) -> Collection:
    """Rename a collection and/or change its description (the owner's call)."""
    changes: dict[str, str] = {}
    if name is not None:
        name = name.strip()
        if not name:
            raise InvalidInput(_("A collection needs a name."))
        if len(name) > 200:
            raise InvalidInput(_("A collection name can be at most 200 characters."))
        changes["name"] = name
    if description is not None:
        changes["description"] = description.strip()[:5000]
    if not changes:
        return collection
    with transaction.atomic():
        previous = {field: getattr(collection, field) for field in changes}
        for field, value in changes.items():
            setattr(collection, field, value)
        collection.save(update_fields=list(changes))
        audit_record(actor=actor, action="collection.update", target_type="collection", target_id=collection.pk,
                     detail={"changes": changes, "previous": previous})
    return collection


def collection_delete(*, actor: Actor, collection: Collection) -> None:
    """Tombstones every document of the collection, then the collection itself.

    Gone from every read at once; the documents' chunks and bytes are purged
    by compaction.  The collection row itself stays, tombstoned: grants,
    golden sets and evaluation runs keep pointing at it.
    """
    now = timezone.now()
    with transaction.atomic():
        everything = "deleting a collection deletes every document in it"
        ids = list(collection.documents.unrestricted(everything).live().values_list("id", flat=True))
        Document.objects.unrestricted(everything).filter(pk__in=ids).update(deleted_at=now)
        audit_record(actor=actor, action="collection.delete", target_type="collection",
                     target_id=collection.pk, detail={"documents": len(ids)})
        Collection.objects.filter(pk=collection.pk).update(deleted_at=now)


def chunk_ids_reserve(count: int) -> int:
    """Reserve ``count`` consecutive chunk ids; returns the first.

    Row-locked on PostgreSQL; SQLite serialises writers anyway.  Call inside
    a transaction so a rollback also releases nothing twice (gaps are fine).
    """
    if count <= 0:
        raise ValueError("count must be positive")
    with transaction.atomic():
        block, _created = IdBlock.objects.select_for_update().get_or_create(name="chunk")
        start = block.next_value
        block.next_value = start + count
        block.save(update_fields=["next_value"])
    return start


@dataclass(frozen=True)
class UploadResult:
    document: Document
    version: DocumentVersion
    created: bool      # a new document (False: a new version of an existing one, or a duplicate)
    duplicate: bool    # the same bytes are already in this collection: nothing new was stored


def version_add(
    *, actor: Actor, collection: Collection, title: str, blob: StoredBlob, kind: str,
    replace: Document | None = None, restore: bool = False,
) -> UploadResult:
    """Record stored bytes as a new document version (or find them already there), audited.

    * Same bytes as a live document of the collection → that document (no new version);
      with ``restore`` (an earlier version of ``replace`` brought back), only the same bytes
      as its newest version count: older versions' bytes make a new version.
    * ``replace`` given, or a live document with the same title → a new version of it;
      the old version stays searchable until the new one is INDEXED.
    * Otherwise a new document.

    Only documents the uploader may read are ever matched (by bytes or by
    title): a document hidden from them by a policy is neither overwritten
    nor revealed; their upload becomes a document of its own.  Atomic; call
    it inside the transaction that also creates the new version's job.
    """
    if actor.user is None:
        raise InvalidInput(_("An upload needs a user."))
    user = actor.user
    with transaction.atomic():
        candidates = DocumentVersion.objects.restrict(user).filter(sha256=blob.sha256, document__collection=collection)
        if restore and replace is not None:
            candidates = candidates.filter(pk=replace.latest_version_id or 0)
        duplicate = candidates.select_related("document").order_by("-id").first()
        if duplicate is not None and (replace is None or duplicate.document_id == replace.pk):
            audit_record(actor=actor, action="document.upload_duplicate", target_type="document",
                         target_id=duplicate.document_id, detail={"sha256": blob.sha256})
            return UploadResult(duplicate.document, duplicate, created=False, duplicate=True)
        document = replace or (
            Document.objects.restrict(user).filter(collection=collection, title=title).select_for_update().first()
        )
        created = document is None
        if document is None:
            document = Document.objects.create(collection=collection, title=title, created_by=actor.user)
        versions = document.versions.unrestricted("numbering the versions of the document being written")
        number = (versions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
        version = DocumentVersion.objects.create(
            document=document, number=number, sha256=blob.sha256, size=blob.size,
            kind=kind, original_name=title, created_by=actor.user,
        )
        document.latest_version = version
        document.save(update_fields=["latest_version"])
        audit_record(
            actor=actor, action="document.upload" if created else "document.replace",
            target_type="document", target_id=document.pk,
            detail={"version": number, "sha256": blob.sha256, "size": blob.size, "collection": collection.pk},
        )
    return UploadResult(document, version, created=created, duplicate=False)


def blob_discard(sha256: str) -> None:
    """Drop bytes that were stored for an upload that was then refused (unless a version holds them)."""
    if not DocumentVersion.objects.unrestricted("whether any version still holds these bytes").filter(
            sha256=sha256).exists():
        blob_delete(sha256)


def document_delete(*, actor: Actor, document: Document) -> bool:
    """Tombstone: gone from every read now; chunks and bytes are purged by compaction.

    Returns whether this call deleted it (False: it was deleted already).
    """
    with transaction.atomic():
        updated = (Document.objects.restrict(actor.user, "change").filter(pk=document.pk)
                   .update(deleted_at=timezone.now()))
        if updated:
            audit_record(actor=actor, action="document.delete", target_type="document", target_id=document.pk)
    return bool(updated)


# --- sharing, policies and document attributes ------------------------------------------


def _principal(principal: User | Group) -> dict[str, object]:
    if isinstance(principal, Group):
        return {"group_id": principal.pk, "group": principal.name}
    return {"user_id": principal.pk, "username": principal.get_username()}


def _not_the_creator(collection: Collection, principal: User | Group) -> None:
    """The collection's creator holds every right by ownership, not by a grant: nothing to change there."""
    if isinstance(principal, User) and principal.pk == collection.owner_id:
        raise InvalidInput(_("%(name)s created this collection and keeps every right on it; "
                             "their access cannot be changed by sharing.") % {"name": principal.get_username()})


def collection_share(*, actor: Actor, collection: Collection, principal: User | Group, role: str) -> None:
    """Grant a user or group a role on a collection (replacing its previous role there).

    Stored as django-guardian object permissions; grants through several
    groups add up (``kb.selectors`` takes the union).  The caller has checked
    that ``actor`` owns the collection.  A grant to the creator changes
    nothing they may do (they own the collection); the API refuses it.
    """
    from guardian.shortcuts import assign_perm, remove_perm

    from kb.selectors import ROLE_PERMISSIONS, CollectionPermission, Role

    try:
        wanted = ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        raise InvalidInput(_("role must be one of viewer, editor, owner.")) from None
    with transaction.atomic():
        for permission in CollectionPermission:
            if permission not in wanted:
                remove_perm(permission.value, principal, collection)
        for permission in wanted:
            assign_perm(permission.value, principal, collection)
        audit_record(actor=actor, action="collection.share", target_type="collection", target_id=collection.pk,
                     detail={**_principal(principal), "role": role})


def collection_unshare(*, actor: Actor, collection: Collection, principal: User | Group) -> None:
    """Remove every grant of a user or group on a collection; effective on the next request.

    The creator keeps every right (``InvalidInput``, a 400): unsharing them
    would otherwise answer success and change nothing.
    """
    from guardian.shortcuts import remove_perm

    from kb.selectors import CollectionPermission

    _not_the_creator(collection, principal)
    with transaction.atomic():
        for permission in CollectionPermission:
            remove_perm(permission.value, principal, collection)
        audit_record(actor=actor, action="collection.unshare", target_type="collection", target_id=collection.pk,
                     detail=_principal(principal))


def collection_policy_set(*, actor: Actor, collection: Collection, source: str) -> None:
    """Set (empty: remove) the collection's ABAC policy; an invalid one is refused with its position."""
    from access.administration import PolicyError, policy_set
    from access.models import Policy

    try:
        policy_set(actor=actor, scope=Policy.collection_scope(collection.pk), source=source,
                   collection_id=collection.pk)
    except PolicyError as exc:
        raise InvalidPolicy(exc) from None


def document_attributes_set(*, actor: Actor, document: Document, attributes: object) -> Document:
    """Replace a document's ABAC attributes (department, sensitivity, …)."""
    from access.administration import InvalidAttributes, attributes_validate

    try:
        clean = attributes_validate(attributes)
    except InvalidAttributes as exc:
        raise InvalidInput(str(exc)) from None
    with transaction.atomic():
        if not Document.objects.restrict(actor.user, "manage").filter(pk=document.pk).update(attributes=clean):
            raise NotFound("document")
        document.attributes = clean
        audit_record(actor=actor, action="document.attributes", target_type="document", target_id=document.pk,
                     detail={"attributes": clean})
    return document
