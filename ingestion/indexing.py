"""The single index writer: adds embedded versions to the index files, purges tombstones.

Runs on the ``index`` queue with concurrency 1 in the team shape and in the
local worker in the personal shape; a file lock makes it single-writer in
any case.  Idempotent: chunk ids are upserted, and a crash between writing
the files and updating the database is repaired by the next pass.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ingestion.models import IngestionJob
from ingestion.services import index_text
from kb.models import Chunk, Document, DocumentVersion
from kb.retrieval.index_store import IndexSnapshot, IndexStore
from kb.retrieval.lexical import tokenize
from kb.storage import blob_delete

log = logging.getLogger(__name__)
Status = IngestionJob.Status

# Bound the memory one pass holds; the rest waits for the next pass.
MAX_CHUNKS_PER_PASS = 50_000


@dataclass(frozen=True)
class IndexPassResult:
    indexed_versions: list[int]
    purged_versions: list[int]
    index_version: int


def index_store() -> IndexStore:
    """The active embedding model's index (see ``ingestion.model_switch``)."""
    from ingestion.model_switch import active_model, store_for

    return store_for(active_model().model_id)


def _purgeable() -> list[DocumentVersion]:
    """Versions whose chunks must leave the index: superseded, or of deleted documents."""
    return list(
        DocumentVersion.objects.filter(purged_at__isnull=True, chunk_id_start__isnull=False)
        .filter(Q(superseded_at__isnull=False) | Q(document__deleted_at__isnull=False))
        .select_related("document")
    )


def index_pass(*, compact: bool = False) -> IndexPassResult:
    """Index every version that is ready; with ``compact``, also purge tombstoned ones."""
    from ingestion.model_switch import active_model, pin_active_if_unset

    pin_active_if_unset()
    store = index_store()
    indexed: list[int] = []
    purged: list[int] = []
    with store.writer_lock():
        if active_model().model_id != store.model_id:
            # A model switch flipped while we waited for the lock: index into the new model.
            return IndexPassResult([], [], store.current_version()) if _no_work() else _rerun(compact)
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
        # The dense base is read only if this pass must merge: appending costs the delta, not the index.
        snapshot = _take_kept(store) or store.load(lazy_dense=True) or store.empty(_dimension())
        for job in batch:
            if job.embedding_model and job.embedding_model != store.model_id:
                _reembed(job.version)
            _add_version(snapshot, job.version)
        for version in to_purge:
            ids = np.arange(version.chunk_id_start, version.chunk_id_start + version.chunk_count, dtype=np.int64)
            snapshot.dense.remove(ids)
            snapshot.lexical.remove(ids)
        dense = snapshot.dense
        if dense.needs_merge() or (compact and (dense.delta.ntotal or len(dense.deleted))):
            dense.merge()
        index_version = store.write(snapshot)
        _keep(store, snapshot)
        indexed = _mark_indexed(batch)
        purged = _mark_purged(to_purge)
    log.info("index v%s: +%d versions, -%d purged", index_version, len(indexed), len(purged))
    return IndexPassResult(indexed, purged, index_version)


# The writer's own copy of the index as it last wrote it, by index directory (CAIRN_INDEX_WRITER_KEEP).
_kept: dict[Path, IndexSnapshot] = {}
_kept_lock = threading.Lock()


def _take_kept(store: IndexStore) -> IndexSnapshot | None:
    """The kept copy, if it is still the current version of this store; it leaves the cache either way.

    Taken, not borrowed: a pass that fails half-way has mutated it, and
    the next pass then reads the files again.  Any other writer (a model
    switch, a repair tool) writes a new version, which this check notices.
    """
    with _kept_lock:
        snapshot = _kept.pop(store.dir, None)
    if snapshot is None or snapshot.model_id != store.model_id or snapshot.version != store.current_version():
        return None
    return snapshot


def _keep(store: IndexStore, snapshot: IndexSnapshot) -> None:
    if not settings.CAIRN_INDEX_WRITER_KEEP:
        return
    snapshot.dense.release_base()
    snapshot.lexical.release_weights()
    with _kept_lock:
        _kept[store.dir] = snapshot


def _no_work() -> bool:
    return not IngestionJob.objects.filter(status=Status.EMBEDDING, ready_to_index=True).exists()


def _rerun(compact: bool) -> IndexPassResult:
    return index_pass(compact=compact)


def _reembed(version: DocumentVersion) -> None:
    """Chunks embedded with a model that is no longer active (a switch flipped mid-job)."""
    from ingestion.model_switch import active_embedder, reembed_chunks

    reembed_chunks(version, active_embedder())


def _dimension() -> int:
    from ingestion.model_switch import active_embedder

    return active_embedder().dim


def _add_version(snapshot: IndexSnapshot, version: DocumentVersion) -> None:
    rows = list(
        Chunk.objects.filter(version=version).order_by("id").values_list("id", "text", "heading", "embedding")
    )
    if not rows:
        return
    title = version.parsed_title or version.document.title
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(bytes(row[3]) for row in rows), dtype=np.float32).reshape(len(rows), -1)
    snapshot.dense.add(ids, vectors)
    snapshot.lexical.add(ids, [tokenize(index_text(text, heading, title)) for _, text, heading, _ in rows])


def _mark_indexed(jobs: list[IngestionJob]) -> list[int]:
    done: list[int] = []
    now = timezone.now()
    for job in jobs:
        with transaction.atomic():
            changed = IngestionJob.objects.filter(
                pk=job.pk, status=Status.EMBEDDING, ready_to_index=True, attempts=job.attempts
            ).update(status=Status.INDEXED, progress=1.0, detail="", finished_at=now, updated_at=now)
            if not changed:
                continue
            version = job.version
            DocumentVersion.objects.filter(pk=version.pk).update(indexed_at=now)
            # Lock the document row only: FOR UPDATE may not reach the nullable side of a join.
            document = Document.objects.select_for_update().get(pk=version.document_id)
            current = document.current_version
            if current is None or current.number < version.number:
                document.make_current(version)
                document.save(update_fields=Document.CURRENT_FIELDS)
                if current is not None:
                    DocumentVersion.objects.filter(pk=current.pk).update(superseded_at=now)
            else:  # an older version finished after a newer one: it is superseded at once
                DocumentVersion.objects.filter(pk=version.pk).update(superseded_at=now)
            done.append(version.pk)
    return done


def _mark_purged(versions: list[DocumentVersion]) -> list[int]:
    done: list[int] = []
    now = timezone.now()
    for version in versions:
        with transaction.atomic():
            Chunk.objects.filter(version=version).delete()
            DocumentVersion.objects.filter(pk=version.pk).update(purged_at=now, text="")
        if version.document.deleted_at is not None and not DocumentVersion.objects.filter(
            sha256=version.sha256, purged_at__isnull=True
        ).exists():
            blob_delete(version.sha256)
        done.append(version.pk)
    return done


def index_rebuild() -> IndexPassResult:
    """Rebuild the index files from the database (e.g. after losing the index directory)."""
    from ingestion.model_switch import pin_active_if_unset

    pin_active_if_unset()
    store = index_store()
    with store.writer_lock():
        snapshot = store.empty(_dimension())
        versions = DocumentVersion.objects.filter(
            current_for__isnull=False, document__deleted_at__isnull=True, chunk_id_start__isnull=False
        ).select_related("document")
        count = 0
        for version in versions.iterator():
            _add_version(snapshot, version)
            count += 1
        if snapshot.dense.needs_merge():
            snapshot.dense.merge()
        index_version = store.write(snapshot)
    return IndexPassResult([], [], index_version)
