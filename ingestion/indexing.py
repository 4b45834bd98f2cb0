"""The single index writer's database side: what goes into the index, and the state it leaves.

Runs on the ``index`` queue with concurrency 1 in the team shape and in the
local worker in the personal shape; the store's file lock makes it
single-writer in any case.  Under that lock a pass reads which versions are
ready and which must leave, hands their chunks to the index layer's writer
(``kb.retrieval.writer``), and marks them INDEXED or purged.  Idempotent:
chunk ids are upserted, and a crash between writing the files and updating
the database is repaired by the next pass.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from django.db.models import Case, FloatField, Q, Value, When
from django.utils import timezone

from ingestion.models import IngestionJob
from kb import index
from kb.models import Chunk, Document, DocumentVersion
from kb.retrieval.embedding import Embedder
from kb.retrieval.index_store import IndexStore
from kb.retrieval.writer import ChunkBatch, chunk_tokens
from kb.storage import blob_delete

log = logging.getLogger(__name__)
WRITER = "the index writer acts on document versions, for no one user"  # why these queries read past every user's scope
Status = IngestionJob.Status

# Bound the memory one pass holds; the rest waits for the next pass.
MAX_CHUNKS_PER_PASS = 50_000
EMBED_SLICE = 512


@dataclass(frozen=True)
class IndexPassResult:
    indexed_versions: list[int]
    purged_versions: list[int]
    index_version: int


def _chunk_rows(version: DocumentVersion) -> tuple[np.ndarray, list[tuple[str, str]], str]:
    """(chunk ids, each chunk's (text, heading), the title) of a version, in id order."""
    rows = list(Chunk.objects.unrestricted(WRITER).filter(version=version).order_by("id").values_list("id", "text", "heading"))
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return ids, [(text, heading) for _, text, heading in rows], version.parsed_title or version.document.title


def stored_batch(version: DocumentVersion) -> ChunkBatch:
    """A version's chunks with the vectors stored in the database, as the index takes them."""
    rows = list(
        Chunk.objects.unrestricted(WRITER).filter(version=version).order_by("id").values_list("id", "text", "heading", "embedding")
    )
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(_stored_vector(row[3]) for row in rows), dtype=np.float32).reshape(len(rows), -1)
    title = version.parsed_title or version.document.title
    return ChunkBatch(ids, vectors, chunk_tokens([(text, heading) for _, text, heading, _ in rows], title))


def _stored_vector(value: bytes | memoryview | None) -> bytes:
    if value is None:  # ingestion stores every chunk with its vector before the job is ready to index
        raise ValueError("a chunk handed to the index writer has no stored vector")
    return bytes(value)


def version_tokens(version: DocumentVersion) -> list[list[str]]:
    """The BM25 terms of a version's chunks."""
    _, rows, title = _chunk_rows(version)
    return chunk_tokens(rows, title)


def embed_version(version: DocumentVersion, embedder: Embedder) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """(ids, vectors, tokens) of a version's chunks, embedded the way ingestion embeds them."""
    from kb.retrieval.passages import index_text

    ids, rows, title = _chunk_rows(version)
    texts = [index_text(text, heading, title) for text, heading in rows]
    parts = [embedder.encode(texts[i:i + EMBED_SLICE], batch_size=index.embed_batch_size(embedder))
             for i in range(0, len(texts), EMBED_SLICE)]
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)
    return ids, vectors, chunk_tokens(rows, title)


def vectors_write(ids: np.ndarray, vectors: np.ndarray, model_id: str) -> None:
    """Replace the stored vectors of these chunks with ``model_id``'s, recording that model on each chunk."""
    with transaction.atomic():
        for start in range(0, len(ids), 1000):
            batch = [Chunk(id=int(i), embedding=vectors[start + n].tobytes(), embedding_model=model_id)
                     for n, i in enumerate(ids[start:start + 1000].tolist())]
            Chunk.objects.unrestricted(WRITER).bulk_update(batch, ["embedding", "embedding_model"], batch_size=1000)


def _stale_versions(model_id: str, versions: list[int] | None = None) -> set[int]:
    """Versions with chunks whose vectors another model made (chunks from before that was recorded say "")."""
    chunks = Chunk.objects.unrestricted(WRITER).exclude(embedding_model__in=("", model_id))
    if versions is not None:
        chunks = chunks.filter(version_id__in=versions)
    return set(chunks.values_list("version_id", flat=True).distinct())


def _reembed(version: DocumentVersion, model_id: str) -> None:
    """Embed a version's chunks again with the active model (``model_id``) and store those vectors.

    For chunks another model embedded: a job embedded just before a switch
    flipped, or a switch that wrote the new model's vectors and stopped
    before its flip — its vectors must not enter the old model's index.
    """
    embedder = index.active_embedder()
    if embedder.model_id != model_id:
        raise RuntimeError(f"the active model changed to {embedder.model_id} while indexing {model_id}")
    ids, vectors, _ = embed_version(version, embedder)
    vectors_write(ids, vectors, model_id)


def index_due() -> bool:
    """Whether the active index was made by another tokenizer than this code's (a rebuild is due)."""
    return index.index_store().tokenizer_stale()


def _purgeable() -> list[DocumentVersion]:
    """Versions whose chunks must leave the index: superseded, or of deleted documents."""
    return list(
        DocumentVersion.objects.unrestricted(WRITER).filter(purged_at__isnull=True, chunk_id_start__isnull=False)
        .filter(Q(superseded_at__isnull=False) | Q(document__deleted_at__isnull=False))
        .select_related("document")
    )


def index_pass(*, compact: bool = False) -> IndexPassResult:
    """Index every version that is ready; with ``compact``, also purge tombstoned ones.

    An index whose BM25 terms come from another tokenizer version is
    rebuilt from the database instead (``index_due``).
    """
    index.pin_active_if_unset()
    store = index.index_store()
    with store.writer_lock():
        if index.active_model().model_id != store.model_id:
            # A model switch flipped while we waited for the lock: index into the new model.
            return IndexPassResult([], [], store.current_version()) if _no_work() else index_pass(compact=compact)
        if store.tokenizer_stale():
            log.info("index of %s was made by another tokenizer version: rebuilding it", store.model_id)
            return _rebuild(store)
        ready = list(
            IngestionJob.objects.filter(status=Status.EMBEDDING, ready_to_index=True)
            .select_related("version__document")
            .order_by("id")
        )
        batch: list[IngestionJob] = []
        total = 0
        for job in ready:
            if batch and total + job.version.chunk_count > MAX_CHUNKS_PER_PASS:
                break
            batch.append(job)
            total += job.version.chunk_count
        to_purge = _purgeable() if compact else []
        if not batch and not to_purge:
            return IndexPassResult([], [], store.current_version())

        stale = _stale_versions(store.model_id, [job.version_id for job in batch])

        def adds() -> Iterator[ChunkBatch]:
            for job in batch:
                if job.version_id in stale or (job.embedding_model and job.embedding_model != store.model_id):
                    _reembed(job.version, store.model_id)
                yield stored_batch(job.version)

        removes = (np.arange(start, start + v.chunk_count, dtype=np.int64)
                   for v in to_purge if (start := v.chunk_id_start) is not None)
        index_version = index.writer_for(store).apply(adds(), removes, compact=compact)
        indexed = _mark_indexed(batch)
        purged = _mark_purged(to_purge)
    log.info("index v%s: +%d versions, -%d purged", index_version, len(indexed), len(purged))
    return IndexPassResult(indexed, purged, index_version)


def _no_work() -> bool:
    return not IngestionJob.objects.filter(status=Status.EMBEDDING, ready_to_index=True).exists()


def _mark_indexed(jobs: list[IngestionJob]) -> list[int]:
    """The jobs INDEXED, each version made its document's current one (or superseded at once if a newer one is).

    One transaction for the whole pass when its jobs are of different
    documents and none changed since the pass read them; otherwise one per job.
    """
    if len(jobs) > 1 and len({job.version.document_id for job in jobs}) == len(jobs):
        try:
            with transaction.atomic():
                return _mark_indexed_together(jobs)
        except _PassChanged:
            pass
    return [version for job in jobs for version in _mark_indexed_one(job)]


class _PassChanged(Exception):
    """A job of the pass changed since it was read (another attempt, a reaper): mark them one by one instead."""


def _index_seconds(job: IngestionJob, now: dt.datetime) -> float:
    # From "ready for the writer" (its last update) to indexed: the wait and the write.
    return round(max(0.0, (now - job.updated_at).total_seconds()), 4)


def _mark_indexed_together(jobs: list[IngestionJob]) -> list[int]:
    """``_mark_indexed`` of jobs of distinct documents, inside one transaction; ``_PassChanged`` rolls it back."""
    now = timezone.now()
    which = Q()
    for job in jobs:
        which |= Q(pk=job.pk, attempts=job.attempts)
    seconds = Case(*(When(pk=job.pk, then=Value(_index_seconds(job, now))) for job in jobs),
                   output_field=FloatField())
    changed = IngestionJob.objects.filter(which, status=Status.EMBEDDING, ready_to_index=True).update(
        status=Status.INDEXED, progress=1.0, detail="", finished_at=now, updated_at=now, index_seconds=seconds)
    if changed != len(jobs):
        raise _PassChanged
    versions = [job.version for job in jobs]
    DocumentVersion.objects.unrestricted(WRITER).filter(pk__in=[v.pk for v in versions]).update(indexed_at=now)
    # Lock the document rows only (in id order), as one job at a time does.
    documents = {document.pk: document for document in Document.objects.unrestricted(WRITER).select_for_update(
        of=("self",)).filter(pk__in=[v.document_id for v in versions]).order_by("pk")}
    numbers = dict(DocumentVersion.objects.unrestricted(WRITER).filter(
        pk__in=[d.current_version_id for d in documents.values() if d.current_version_id is not None],
    ).values_list("pk", "number"))
    made_current: list[Document] = []
    superseded: list[int] = []
    for version in versions:
        document = documents[version.document_id]
        current = document.current_version_id
        if current is None or numbers[current] < version.number:
            document.make_current(version)
            made_current.append(document)
            if current is not None:
                superseded.append(current)
        else:  # an older version finished after a newer one: it is superseded at once
            superseded.append(version.pk)
    Document.objects.unrestricted(WRITER).bulk_update(made_current, Document.CURRENT_FIELDS)
    if superseded:
        DocumentVersion.objects.unrestricted(WRITER).filter(pk__in=superseded).update(superseded_at=now)
    return [version.pk for version in versions]


def _mark_indexed_one(job: IngestionJob) -> list[int]:
    now = timezone.now()
    with transaction.atomic():
        changed = IngestionJob.objects.filter(
            pk=job.pk, status=Status.EMBEDDING, ready_to_index=True, attempts=job.attempts
        ).update(status=Status.INDEXED, progress=1.0, detail="", finished_at=now, updated_at=now,
                 index_seconds=_index_seconds(job, now))
        if not changed:
            return []
        version = job.version
        DocumentVersion.objects.unrestricted(WRITER).filter(pk=version.pk).update(indexed_at=now)
        # Lock the document row only: FOR UPDATE may not reach the nullable side of a join.
        document = Document.objects.unrestricted(WRITER).select_for_update().get(pk=version.document_id)
        current = document.current_version
        if current is None or current.number < version.number:
            document.make_current(version)
            document.save(update_fields=Document.CURRENT_FIELDS)
            if current is not None:
                DocumentVersion.objects.unrestricted(WRITER).filter(pk=current.pk).update(superseded_at=now)
        else:  # an older version finished after a newer one: it is superseded at once
            DocumentVersion.objects.unrestricted(WRITER).filter(pk=version.pk).update(superseded_at=now)
    return [version.pk]


def _mark_purged(versions: list[DocumentVersion]) -> list[int]:
    done: list[int] = []
    now = timezone.now()
    for version in versions:
        with transaction.atomic():
            Chunk.objects.unrestricted(WRITER).filter(version=version).delete()
            DocumentVersion.objects.unrestricted(WRITER).filter(pk=version.pk).update(purged_at=now, text="")
        if version.document.deleted_at is not None and not DocumentVersion.objects.unrestricted(WRITER).filter(
            sha256=version.sha256, purged_at__isnull=True
        ).exists():
            blob_delete(version.sha256)
        done.append(version.pk)
    return done


def _current_versions() -> Iterator[DocumentVersion]:
    return DocumentVersion.objects.unrestricted(WRITER).filter(
        current_for__isnull=False, document__deleted_at__isnull=True, chunk_id_start__isnull=False
    ).select_related("document").iterator()


def _rebuild(store: IndexStore) -> IndexPassResult:
    """With the writer lock held: a new version from every current version's chunks in the database.

    Chunks whose vectors another model made are embedded again first (a
    switch that stopped between writing its vectors and its flip left them).
    """
    stale = _stale_versions(store.model_id)
    if stale:
        log.warning("rebuilding %s: %d versions hold another model's vectors; embedding them again",
                    store.model_id, len(stale))

    def batches() -> Iterator[ChunkBatch]:
        for version in _current_versions():
            if version.pk in stale:
                _reembed(version, store.model_id)
            yield stored_batch(version)

    index_version = index.writer_for(store).rebuild(batches())
    # A full rebuild can change what each leg scores (a new tokenizer, re-chunked text): the fusion
    # owners tuned on the old index is re-checked by re-running the tuning, meanwhile search uses the default.
    from kb.tuning import fusion_mark_stale

    fusion_mark_stale("reindex")
    return IndexPassResult([], [], index_version)


def index_rebuild() -> IndexPassResult:
    """Rebuild the index files from the database (e.g. after losing the index directory)."""
    index.pin_active_if_unset()
    store = index.index_store()
    with store.writer_lock():
        return _rebuild(store)
