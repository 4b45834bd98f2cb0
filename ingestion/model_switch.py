"""The blue-green switch of the embedding model: the database side of it.

The *active* model is recorded in ``<index dir>/ACTIVE_MODEL``
(``kb.retrieval.active_model``).  Searches embed queries with it and read
its index; the ingest workers embed new chunks with it.  Changing ``CAIRN_EMBEDDING_MODEL``
does not change the active model by itself: ``model_switch`` (the command
``cairn_model_switch``) builds the new model's index alongside the old one —
re-embedding every current chunk — while searches keep using the old one,
then, under the index writer's lock, catches up with what changed
meanwhile, writes the new vectors to the database, and only then flips
``ACTIVE_MODEL``.  A crash before the flip leaves the old model serving.
Phase 1 checkpoints what it has embedded (``kb.retrieval.switch``, next to
the new model's index), so running the switch again resumes where it
stopped instead of re-embedding everything.

Jobs record the model their chunks were embedded with; the index writer
re-embeds a job's chunks if the active model changed since (a job embedded
just before the flip), so an index never mixes two models' vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ingestion.indexing import embed_version, vectors_write, version_tokens
from kb import index
from kb.models import DocumentVersion
from kb.retrieval.switch import SwitchBuild, SwitchCheckpoint
from kb.retrieval.writer import ChunkBatch

__all__ = ["SwitchCheckpoint", "SwitchResult", "embed_version", "model_switch"]

log = logging.getLogger(__name__)
SWITCH = "the model switch re-embeds every current version, for no one user"  # why these queries read past every user's scope
CHECKPOINT_EVERY = 20_000  # chunks embedded between two checkpoints (~1-3 min of embedding on a CPU)


def _current_versions() -> dict[int, DocumentVersion]:
    versions = DocumentVersion.objects.unrestricted(SWITCH).filter(
        current_for__isnull=False, document__deleted_at__isnull=True, chunk_id_start__isnull=False,
        indexed_at__isnull=False,
    ).select_related("document")
    return {v.pk: v for v in versions}


@dataclass(frozen=True)
class SwitchResult:
    previous: str
    active: str
    chunks: int
    index_version: int
    switched: bool
    resumed: int = 0  # chunks whose vectors came from an interrupted run's checkpoint


def model_switch(
    target_path: str | None = None, *, progress: Callable[[int, int], None] | None = None,
    before_flip: Callable[[], None] | None = None, restart: bool = False,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> SwitchResult:
    """Build the index of ``target_path`` (default: the configured model) alongside and swap to it.

    Searches keep using the active model's index until the flip.  Phase 1
    (no lock) re-embeds every current chunk, checkpointing every
    ``checkpoint_every`` chunks, and resumes from an interrupted run's
    checkpoint unless ``restart``; phase 2 (the writer lock of the active
    index, so no index pass runs) embeds what was indexed in the meantime,
    drops what was removed, writes the new index version and the new
    vectors to the database, then flips ``ACTIVE_MODEL`` and deletes the
    checkpoint.  The vectors stay on disk in the checkpoint until the end,
    where the dense index is built from it and the database rows are
    written from it one part at a time.
    """
    target = index.model_for(target_path) if target_path is not None else index.configured_model()
    current = index.pin_active_if_unset()
    if target.model_id == current.model_id:
        return SwitchResult(current.model_id, current.model_id, 0,
                            index.store_for(current.model_id).current_version(), switched=False)
    embedder = index.embedder_for(target)
    build = SwitchBuild(index.store_for(target.model_id), embedder.dim, checkpoint_every=checkpoint_every,
                        restart=restart)

    def embedded(version: DocumentVersion) -> ChunkBatch:
        ids, vectors, tokens = embed_version(version, embedder)
        return ChunkBatch(ids, vectors, tokens)

    versions = _current_versions()
    total = sum(v.chunk_count for v in versions.values())
    resumed = done = build.resume(versions, version_tokens)
    if resumed:
        log.info("model switch to %s: resuming, %d of %d chunks already embedded", target.model_id, resumed, total)
    for version in versions.values():
        if version.pk in build.done:
            continue
        build.add(version, embedded(version))
        done += version.chunk_count
        if progress is not None:
            progress(done, total)
    build.flush()

    with index.store_for(current.model_id).writer_lock():
        latest = _current_versions()
        for pk in [pk for pk in build.done if pk not in latest]:
            build.drop(pk)
        for pk, version in latest.items():
            if pk not in build.done:
                build.catch_up(pk, embedded(version))
        index_version = build.write(latest)
        # Each chunk records the model of its vectors: should the process stop before the flip below,
        # the active model's index writer re-embeds them instead of indexing another model's vectors.
        for ids, vectors in build.batches(latest):
            vectors_write(ids, vectors, target.model_id)
        if before_flip is not None:
            before_flip()
        index.set_active(target)
    build.checkpoint.clear()
    # Another model scores the dense leg differently: tuned fusions are re-checked (kb.tuning).
    from kb.tuning import fusion_mark_stale

    fusion_mark_stale("model_switch")
    log.info("embedding model switched: %s -> %s (%d chunks)", current.model_id, target.model_id, total)
    return SwitchResult(current.model_id, target.model_id, build.chunks, index_version, switched=True,
                        resumed=resumed)
