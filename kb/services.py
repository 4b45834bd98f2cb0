"""Writes of the knowledge base: collections, uploads, new versions, deletion.

Every service takes the acting user explicitly, checks it against the
selectors' scopes, and writes an audit event.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from access.models import User
from access.services import Actor, audit_record
from kb.exceptions import InvalidInput, InvalidPolicy, UnsupportedType
from kb.models import Collection, Document, DocumentVersion, IdBlock
from kb.storage import blob_delete, blob_read, blob_store

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def display_name(filename: str) -> str:
    """A filename made safe to *display*: the last path component, no control characters.

    It is never used as a path (storage is content-addressed); this only
    keeps ``../../etc/passwd`` from showing up as a title.  A name with NUL
    or other control characters is refused outright: no legitimate client
    sends one.
    """
    if _CONTROL.search(filename):
        raise InvalidInput("The file name contains control characters (such as NUL).")
    name = unicodedata.normalize("NFC", filename).replace("\\", "/").split("/")[-1].strip()
    name = name.lstrip(".") or "untitled"
    return name[:255]


def collection_create(*, actor: Actor, owner: User, name: str, description: str = "") -> Collection:
    name = name.strip()
    if not name:
        raise InvalidInput("A collection needs a name.")
    if len(name) > 200:
        raise InvalidInput("A collection name can be at most 200 characters.")
    collection = Collection.objects.create(name=name, description=description.strip()[:5000], owner=owner)
    audit_record(actor=actor, action="collection.create", target_type="collection", target_id=collection.pk,
                 detail={"name": name})
    return collection


def collection_delete(*, actor: Actor, collection: Collection) -> None:
    """Tombstones every document of the collection, then removes the collection row."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(collection.documents.live().values_list("id", flat=True))
        Document.objects.filter(pk__in=ids).update(deleted_at=now)
        audit_record(actor=actor, action="collection.delete", target_type="collection",
                     target_id=collection.pk, detail={"documents": len(ids)})
        # A tombstone too: the row stays until compaction has purged its documents.
        Collection.objects.filter(pk=collection.pk).update(deleted_at=now)
    from ingestion.api import enqueue_index

    enqueue_index(compact=True)


def chunk_ids_reserve(count: int) -> int:
    """Reserve ``count`` consecutive chunk ids; returns the first.

    Row-locked on PostgreSQL; SQLite serialises writers anyway.  Call inside
    a transaction so a rollback also releases nothing twice (gaps are fine).
    """
    if count <= 0:
        raise ValueError("count must be positive")
    with transaction.atomic():
        block, _ = IdBlock.objects.select_for_update().get_or_create(name="chunk")
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


def document_upload(
    *,
    actor: Actor,
    collection: Collection,
    filename: str,
    chunks: Iterable[bytes],
    replace: Document | None = None,
) -> UploadResult:
    """Store an upload and queue it for ingestion.

    * Same bytes as a live document of the collection → that document (no new work).
    * ``replace`` given, or a live document with the same name → a new version of it;
      the old version stays searchable until the new one is INDEXED.
    * Otherwise a new document.
    """
    from ingestion.api import UnsupportedFile, job_create, sniff_kind

    if actor.user is None:
        raise InvalidInput("An upload needs a user.")
    title = display_name(filename)
    blob = blob_store(chunks, limit=settings.CAIRN_MAX_UPLOAD_BYTES)
    if blob.size == 0:
        _discard(blob.sha256)
        raise InvalidInput("The file is empty.")
    try:
        # Only the type is checked here (from the content); parsing is the workers' job.
        kind = sniff_kind(blob_read(blob.sha256))
    except UnsupportedFile as exc:
        _discard(blob.sha256)
        raise UnsupportedType(str(exc)) from exc
    with transaction.atomic():
        duplicate = (
            DocumentVersion.objects.filter(
                sha256=blob.sha256, document__collection=collection, document__deleted_at__isnull=True
            )
            .select_related("document")
            .order_by("-id")
            .first()
        )
        if duplicate is not None and (replace is None or duplicate.document_id == replace.pk):
            audit_record(actor=actor, action="document.upload_duplicate", target_type="document",
                         target_id=duplicate.document_id, detail={"sha256": blob.sha256})
            return UploadResult(duplicate.document, duplicate, created=False, duplicate=True)
        document = replace or (
            Document.objects.live().select_for_update().filter(collection=collection, title=title).first()
        )
        created = document is None
        if document is None:
            document = Document.objects.create(collection=collection, title=title, created_by=actor.user)
        number = (document.versions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
        version = DocumentVersion.objects.create(
            document=document, number=number, sha256=blob.sha256, size=blob.size,
            kind=kind, original_name=title, created_by=actor.user,
        )
        document.latest_version = version
        document.save(update_fields=["latest_version"])
        job_create(version.pk)
        audit_record(
            actor=actor, action="document.upload" if created else "document.replace",
            target_type="document", target_id=document.pk,
            detail={"version": number, "sha256": blob.sha256, "size": blob.size, "collection": collection.pk},
        )
    return UploadResult(document, version, created=created, duplicate=False)


def _discard(sha256: str) -> None:
    """Drop bytes that were stored for an upload that was then refused."""
    if not DocumentVersion.objects.filter(sha256=sha256).exists():
        blob_delete(sha256)


def document_delete(*, actor: Actor, document: Document) -> None:
    """Tombstone: gone from every read now; chunks and bytes are purged by compaction."""
    from ingestion.api import enqueue_index

    with transaction.atomic():
        updated = Document.objects.filter(pk=document.pk, deleted_at__isnull=True).update(deleted_at=timezone.now())
        if updated:
            audit_record(actor=actor, action="document.delete", target_type="document", target_id=document.pk)
            enqueue_index(compact=True)


def document_reprocess(*, actor: Actor, document: Document) -> bool:
    """Queue a FAILED latest version again with a fresh attempt budget."""
    from ingestion.api import job_for_version, job_reprocess

    version = document.latest_version
    job = job_for_version(version.pk) if version is not None else None
    if job is None:
        return False
    with transaction.atomic():
        queued = job_reprocess(job)
        if queued:
            audit_record(actor=actor, action="document.reprocess", target_type="document", target_id=document.pk,
                         detail={"version": version.number if version else None})
    return queued


# --- sharing, policies and document attributes ------------------------------------------


def _principal(principal: User | Group) -> dict[str, object]:
    if isinstance(principal, Group):
        return {"group_id": principal.pk, "group": principal.name}
    return {"user_id": principal.pk, "username": principal.get_username()}


def collection_share(*, actor: Actor, collection: Collection, principal: User | Group, role: str) -> None:
    """Grant a user or group a role on a collection (replacing its previous role there).

    Stored as django-guardian object permissions; grants through several
    groups add up (``kb.selectors`` takes the union).  The caller has checked
    that ``actor`` owns the collection.
    """
    from guardian.shortcuts import assign_perm, remove_perm

    from kb.selectors import ROLE_PERMISSIONS, CollectionPermission, Role

    try:
        wanted = ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        raise InvalidInput("role must be one of viewer, editor, owner.") from None
    with transaction.atomic():
        for permission in CollectionPermission:
            if permission not in wanted:
                remove_perm(permission.value, principal, collection)
        for permission in wanted:
            assign_perm(permission.value, principal, collection)
        audit_record(actor=actor, action="collection.share", target_type="collection", target_id=collection.pk,
                     detail={**_principal(principal), "role": role})


def collection_unshare(*, actor: Actor, collection: Collection, principal: User | Group) -> None:
    """Remove every grant of a user or group on a collection; effective on the next request."""
    from guardian.shortcuts import remove_perm

    from kb.selectors import CollectionPermission

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
        Document.objects.filter(pk=document.pk).update(attributes=clean)
        document.attributes = clean
        audit_record(actor=actor, action="document.attributes", target_type="document", target_id=document.pk,
                     detail={"attributes": clean})
    return document
