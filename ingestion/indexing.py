"""The single index writer: adds embedded versions to the index files, purges tombstones.

Runs on the ``index`` queue with concurrency 1 in the team shape and in the
local worker in the personal shape; a file lock makes it single-writer in
any case.  Idempotent: chunk ids are upserted, and a crash between writing
the files and updating the database is repaired by the next pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ingestion.embedding import get_embedder
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
    from ingestion.api import embedding_model_id

    return IndexStore(Path(settings.CAIRN_INDEX_DIR), embedding_model_id())


def _purgeable() -> list[DocumentVersion]:
    """Versions whose chunks must leave the index: superseded, or of deleted documents."""
    return list(
        DocumentVersion.objects.filter(purged_at__isnull=True, chunk_id_start__isnull=False)
        .filter(Q(superseded_at__isnull=False) | Q(document__deleted_at__isnull=False))
        .select_related("document")
    )


def index_pass(*, compact: bool = False) -> IndexPassResult:
    """Index every version that is ready; with ``compact``, also purge tombstoned ones."""
    store = index_store()
    indexed: list[int] = []
    purged: list[int] = []
    with store.writer_lock():
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
        snapshot = store.load() or store.empty(_dimension())
        for job in batch:
            _add_version(snapshot, job.version)
        for version in to_purge:
            ids = np.arange(version.chunk_id_start, version.chunk_id_start + version.chunk_count, dtype=np.int64)
            snapshot.dense.remove(ids)
            snapshot.lexical.remove(ids)
        index_version = store.write(snapshot)
        indexed = _mark_indexed(batch)
        purged = _mark_purged(to_purge)
    log.info("index v%s: +%d versions, -%d purged", index_version, len(indexed), len(purged))
    return IndexPassResult(indexed, purged, index_version)


def _dimension() -> int:
    return get_embedder(settings.CAIRN_EMBEDDING_MODEL, settings.CAIRN_EMBED_DEVICE).dim


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
                document.current_version = version
                document.save(update_fields=["current_version"])
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
        index_version = store.write(snapshot)
    return IndexPassResult([], [], index_version)
