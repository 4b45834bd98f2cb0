"""Writes that start or stop work in the pipeline: uploads, re-processing, deletion.

The web layer (``kb.api``, the pages) and the commands call these through
``ingestion.api``.  Each does its knowledge-base write through
``kb.services`` (audited there) and, in the same transaction, creates or
re-queues the ingestion job, or schedules compaction; the task is sent
after commit (``ingestion.tasks``).  The parsers never run here: an upload's
type is sniffed from its first bytes, the parsing is the workers' job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from access.models import User
from access.services import Actor, audit_record
from ingestion.models import IngestionJob
from ingestion.parsers import ParseError, sniff
from ingestion.tasks import deferred, enqueue_index, enqueue_ingest
from kb import services as kb_services
from kb.evaluation import Dataset, as_markdown
from kb.exceptions import InvalidInput, UnsupportedType
from kb.models import Collection, Document, DocumentVersion
from kb.selectors import readable_collections, readable_documents
from kb.services import UploadResult, blob_discard, display_name
from kb.storage import blob_read, blob_store

Status = IngestionJob.Status


def job_create(version: DocumentVersion) -> IngestionJob:
    """The job of a new version, queued after commit."""
    job = IngestionJob.objects.create(version=version, max_attempts=settings.CAIRN_JOB_MAX_ATTEMPTS)
    enqueue_ingest(job.pk)
    return job


def document_upload(
    *, actor: Actor, collection: Collection, filename: str, chunks: Iterable[bytes],
    replace: Document | None = None, restore: bool = False,
) -> UploadResult:
    """Store an upload and queue it for ingestion (see ``kb.services.version_add`` for what it becomes).

    The bytes are stored content-addressed while they stream in (refused
    past ``CAIRN_MAX_UPLOAD_BYTES``); an empty file or one whose content is
    not a document type Cairn reads is refused and its bytes dropped.
    """
    if actor.user is None:
        raise InvalidInput(_("An upload needs a user."))
    title = display_name(filename)
    blob = blob_store(chunks, limit=settings.CAIRN_MAX_UPLOAD_BYTES)
    if blob.size == 0:
        blob_discard(blob.sha256)
        raise InvalidInput(_("The file is empty."))
    try:
        kind = sniff(blob_read(blob.sha256))
    except ParseError as exc:
        blob_discard(blob.sha256)
        raise UnsupportedType(str(exc)) from exc
    with transaction.atomic():
        result = kb_services.version_add(actor=actor, collection=collection, title=title, blob=blob, kind=kind,
                                         replace=replace, restore=restore)
        if not result.duplicate:
            job_create(result.version)
    return result


def job_reprocess(job: IngestionJob) -> bool:
    """A FAILED job goes back to PENDING with a fresh attempt budget, queued after commit."""
    queued = IngestionJob.objects.filter(pk=job.pk, status=Status.FAILED).update(
        status=Status.PENDING, attempts=0, error="", failure_reason="", detail="Queued again", progress=0.0,
        updated_at=timezone.now(), finished_at=None,
    )
    if queued:
        enqueue_ingest(job.pk)
    return bool(queued)


def document_reprocess(*, actor: Actor, document: Document) -> bool:
    """Queue a FAILED latest version again with a fresh attempt budget; False when it did not fail."""
    version = document.latest_version
    job = IngestionJob.objects.filter(version_id=version.pk).first() if version is not None else None
    if job is None:
        return False
    with transaction.atomic():
        queued = job_reprocess(job)
        if queued:
            audit_record(actor=actor, action="document.reprocess", target_type="document", target_id=document.pk,
                         detail={"version": version.number if version else None})
    return queued


def document_delete(*, actor: Actor, document: Document) -> None:
    """Delete a document now (``kb.services.document_delete``) and purge it from the index soon."""
    with transaction.atomic():
        if kb_services.document_delete(actor=actor, document=document):
            enqueue_index(compact=True)


def collection_delete(*, actor: Actor, collection: Collection) -> None:
    """Delete a collection and its documents now and purge them from the index soon."""
    with transaction.atomic():
        kb_services.collection_delete(actor=actor, collection=collection)
        enqueue_index(compact=True)


def corpus_ingest(
    dataset: Dataset, *, user: User, collection_name: str,
    run_jobs: Callable[[list[int]], None], progress: Callable[[int, int], None] | None = None,
) -> Collection:
    """Upload every entry of a BEIR corpus as a Markdown document and process the jobs with ``run_jobs``.

    Idempotent: running it again finds the duplicates, and processes the jobs
    an interrupted earlier run left unfinished, so it never evaluates a
    partial index.
    """
    actor = Actor(user=user)
    collection = readable_collections(user).filter(name=collection_name).first()
    if collection is None:
        collection = kb_services.collection_create(actor=actor, owner=user, name=collection_name)
    with deferred():
        for i, (doc_id, (title, text)) in enumerate(dataset.corpus.items()):
            document_upload(actor=actor, collection=collection, filename=f"{doc_id}.md",
                            chunks=[as_markdown(title, text)])
            if progress is not None and i % 500 == 0:
                progress(i, len(dataset.corpus))
    pending = [
        document.latest_version.job.pk
        for document in readable_documents(user, collection=collection)
        if document.latest_version is not None and getattr(document.latest_version, "job", None) is not None
        and document.latest_version.job.status not in (Status.INDEXED, Status.FAILED)
    ]
    run_jobs(sorted(pending))
    return collection
