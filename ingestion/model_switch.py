"""Which embedding model serves searches, and the blue-green switch to another one.

The *active* model is recorded in ``<index dir>/ACTIVE_MODEL`` (JSON: model
id and directory).  Searches embed queries with it and read its index; the
ingest workers embed new chunks with it.  Changing ``CAIRN_EMBEDDING_MODEL``
does not change the active model by itself: ``model_switch`` (the command
``cairn_model_switch``) builds the new model's index alongside the old one —
re-embedding every current chunk — while searches keep using the old one,
then, under the index writer's lock, catches up with what changed
meanwhile, writes the new vectors to the database, and only then flips
``ACTIVE_MODEL``.  A crash before the flip leaves the old model serving.
Phase 1 checkpoints what it has embedded (``SwitchCheckpoint``, next to the
new model's index), so running the switch again resumes where it stopped
instead of re-embedding everything.

Jobs record the model their chunks were embedded with; the index writer
re-embeds a job's chunks if the active model changed since (a job embedded
just before the flip), so an index never mixes two models' vectors.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction

from ingestion import embedding
from kb.models import Chunk, DocumentVersion
from kb.retrieval.dense import DenseConfig, DenseIndex
from kb.retrieval.index_store import IndexSnapshot, IndexStore
from kb.retrieval.lexical import BM25Index, tokenize

log = logging.getLogger(__name__)
ACTIVE_FILE = "ACTIVE_MODEL"
EMBED_SLICE = 512
CHECKPOINT_DIR = "switch-checkpoint"
CHECKPOINT_EVERY = 20_000  # chunks embedded between two checkpoints (~1-3 min of embedding on a CPU)


@dataclass(frozen=True)
class ActiveModel:
    model_id: str
    path: str | None  # None: the bundled model


_cache: dict[str, tuple[tuple[int, int], ActiveModel]] = {}
_cache_lock = threading.Lock()


def _active_path() -> Path:
    return Path(settings.CAIRN_INDEX_DIR) / ACTIVE_FILE


def configured_model() -> ActiveModel:
    return ActiveModel(embedding.model_id(settings.CAIRN_EMBEDDING_MODEL), settings.CAIRN_EMBEDDING_MODEL or None)


def active_model() -> ActiveModel:
    """The model searches use now: ``ACTIVE_MODEL`` if written, else the configured one (one stat per call)."""
    path = _active_path()
    try:
        stat = path.stat()
    except FileNotFoundError:
        return configured_model()
    key = (stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        held = _cache.get(str(path))
        if held is not None and held[0] == key:
            return held[1]
        data = json.loads(path.read_text())
        model = ActiveModel(str(data["model_id"]), data.get("path") or None)
        _cache[str(path)] = (key, model)
        return model


def set_active(model: ActiveModel) -> None:
    """Atomically make ``model`` the one searches use (write, fsync, rename)."""
    path = _active_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        handle.write(json.dumps({"model_id": model.model_id, "path": model.path}))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    with _cache_lock:
        _cache.pop(str(path), None)


def pin_active_if_unset() -> ActiveModel:
    """The first index write pins the configured model as active (later config changes need a switch)."""
    if not _active_path().exists():
        set_active(configured_model())
    return active_model()


def embedder_for(model: ActiveModel) -> embedding.SentenceTransformerEmbedder:
    return embedding.get_embedder(model.path, settings.CAIRN_EMBED_DEVICE)


def active_embedder() -> embedding.SentenceTransformerEmbedder:
    return embedder_for(active_model())


def dense_config() -> DenseConfig:
    return DenseConfig(
        approx_above=settings.CAIRN_DENSE_APPROX_ABOVE,
        approx_spec=settings.CAIRN_DENSE_SPEC,
        rerank_depth=settings.CAIRN_DENSE_RERANK_DEPTH,
        ef_search=settings.CAIRN_DENSE_EF_SEARCH,
        exact_max=settings.CAIRN_DENSE_EXACT_MAX,
        delta_max=settings.CAIRN_DENSE_DELTA_MAX,
    )


def store_for(model_id: str) -> IndexStore:
    return IndexStore(Path(settings.CAIRN_INDEX_DIR), model_id, dense_config=dense_config())


def _current_versions() -> dict[int, DocumentVersion]:
    versions = DocumentVersion.objects.filter(
        current_for__isnull=False, document__deleted_at__isnull=True, chunk_id_start__isnull=False,
        indexed_at__isnull=False,
    ).select_related("document")
    return {v.pk: v for v in versions}


def _version_texts(version: DocumentVersion) -> tuple[np.ndarray, list[str]]:
    """(chunk ids, the texts ingestion embeds and indexes for them) of a version."""
    from ingestion.services import index_text

    rows = list(Chunk.objects.filter(version=version).order_by("id").values_list("id", "text", "heading"))
    title = version.parsed_title or version.document.title
    texts = [index_text(text, heading, title) for _, text, heading in rows]
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)), texts


def embed_version(version: DocumentVersion, embedder: embedding.SentenceTransformerEmbedder
                  ) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """(ids, vectors, tokens) of a version's chunks, embedded the way ingestion embeds them."""
    ids, texts = _version_texts(version)
    parts = [embedder.encode(texts[i:i + EMBED_SLICE], batch_size=settings.CAIRN_EMBED_BATCH)
             for i in range(0, len(texts), EMBED_SLICE)]
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)
    return ids, vectors, [tokenize(t) for t in texts]


def reembed_chunks(version: DocumentVersion, embedder: embedding.SentenceTransformerEmbedder) -> None:
    """Replace a version's stored vectors with ``embedder``'s (the writer's repair for a stale job)."""
    ids, vectors, _ = embed_version(version, embedder)
    _write_vectors(ids, vectors)


def _write_vectors(ids: np.ndarray, vectors: np.ndarray) -> None:
    with transaction.atomic():
        for start in range(0, len(ids), 1000):
            batch = [Chunk(id=int(i), embedding=vectors[start + n].tobytes())
                     for n, i in enumerate(ids[start:start + 1000].tolist())]
            Chunk.objects.bulk_update(batch, ["embedding"], batch_size=1000)


class SwitchCheckpoint:
    """What phase 1 of a switch has embedded so far, on disk next to the target model's index.

    One ``part-NNNNNN.npz`` per checkpoint (written to a temporary name,
    fsynced, renamed): the versions it covers with their chunk-id ranges,
    and their chunk ids and vectors.  ``entries`` yields only versions whose
    range still matches the database (a version's chunks never change, so
    a matching range means the same chunks); anything else is embedded
    again.  A file that cannot be read (a crash mid-write leaves only a
    temporary name, but disks fail) is skipped, not trusted.
    """

    def __init__(self, directory: Path, model_id: str, dim: int) -> None:
        self.dir = directory
        self.model_id = model_id
        self.dim = dim

    def _parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.npz")) if self.dir.is_dir() else []

    def entries(self, versions: dict[int, DocumentVersion]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(version pk, ids, vectors)`` part by part, so only one part is in memory at a time.

        A version checkpointed twice yields twice, the later part last.
        """
        meta = self.dir / "checkpoint.json"
        try:
            header = json.loads(meta.read_text())
        except (OSError, ValueError):
            return
        if header.get("model_id") != self.model_id or header.get("dim") != self.dim:
            return
        for part in self._parts():
            try:
                with np.load(part) as data:
                    pks, starts, counts = data["versions"], data["starts"], data["counts"]
                    ids, vectors = data["ids"], data["vectors"]
            except (OSError, ValueError, KeyError) as exc:
                log.warning("model switch: skipping unreadable checkpoint %s: %s", part.name, exc)
                continue
            if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
                continue
            at = 0
            for pk, start, count in zip(pks.tolist(), starts.tolist(), counts.tolist(), strict=True):
                version = versions.get(pk)
                if version is not None and (version.chunk_id_start, version.chunk_count) == (start, count):
                    yield pk, ids[at:at + count], vectors[at:at + count]
                at += count

    def save(self, embedded: dict[int, tuple[DocumentVersion, np.ndarray, np.ndarray]]) -> None:
        """Append one part: ``{version pk: (version, ids, vectors)}`` embedded since the last one."""
        if not embedded:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "checkpoint.json"
        if not meta.exists():
            meta.write_text(json.dumps({"model_id": self.model_id, "dim": self.dim}))
        parts = self._parts()
        number = int(parts[-1].stem.split("-")[1]) + 1 if parts else 1
        entries = list(embedded.values())
        tmp = self.dir / f".part-{number:06d}.tmp"
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                versions=np.asarray([v.pk for v, _, _ in entries], dtype=np.int64),
                starts=np.asarray([v.chunk_id_start for v, _, _ in entries], dtype=np.int64),
                counts=np.asarray([len(ids) for _, ids, _ in entries], dtype=np.int64),
                ids=np.concatenate([ids for _, ids, _ in entries]),
                vectors=np.concatenate([vectors for _, _, vectors in entries]).astype(np.float32, copy=False),
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.dir / f"part-{number:06d}.npz")

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


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
    written from it one part at a time: memory holds the BM25 index and
    the new dense index, not every vector (1.5 GB at 1M chunks) besides.
    """
    target = ActiveModel(embedding.model_id(target_path), target_path or None) if target_path is not None \
        else configured_model()
    current = pin_active_if_unset()
    if target.model_id == current.model_id:
        return SwitchResult(current.model_id, current.model_id, 0, store_for(current.model_id).current_version(),
                            switched=False)
    embedder = embedder_for(target)
    store = store_for(target.model_id)
    lexical = BM25Index()
    checkpoint = SwitchCheckpoint(store.dir / CHECKPOINT_DIR, target.model_id, embedder.dim)
    if restart:
        checkpoint.clear()
    # Vectors are not held here: phase 1's are on disk in the checkpoint, read back part by part
    # for the dense index and the database at the end; only phase 2's catch-up stays in memory.
    done: dict[int, np.ndarray] = {}  # version pk -> chunk ids embedded with the target model
    unsaved: dict[int, tuple[DocumentVersion, np.ndarray, np.ndarray]] = {}
    caught_up: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def add(pk: int, ids: np.ndarray, tokens: list[list[str]]) -> None:
        lexical.add(ids, tokens)
        done[pk] = ids

    versions = _current_versions()
    total = sum(v.chunk_count for v in versions.values())
    for pk, ids, _ in checkpoint.entries(versions):
        if pk not in done:
            _, texts = _version_texts(versions[pk])  # BM25 needs the tokens; re-tokenising is cheap
            add(pk, ids, [tokenize(t) for t in texts])
    resumed = embedded = sum(len(ids) for ids in done.values())
    if resumed:
        log.info("model switch to %s: resuming, %d of %d chunks already embedded", target.model_id, resumed, total)
    since_checkpoint = 0
    for version in versions.values():
        if version.pk in done:
            continue
        ids, vectors, tokens = embed_version(version, embedder)
        add(version.pk, ids, tokens)
        unsaved[version.pk] = (version, ids, vectors)
        embedded += version.chunk_count
        since_checkpoint += version.chunk_count
        if since_checkpoint >= checkpoint_every:
            checkpoint.save(unsaved)
            unsaved.clear()
            since_checkpoint = 0
        if progress is not None:
            progress(embedded, total)
    checkpoint.save(unsaved)
    unsaved.clear()

    active_store = store_for(current.model_id)
    with active_store.writer_lock():
        latest = _current_versions()
        for pk in [pk for pk in done if pk not in latest]:
            lexical.remove(done.pop(pk))
        for pk, version in latest.items():
            if pk not in done:
                ids, vectors, tokens = embed_version(version, embedder)
                add(pk, ids, tokens)
                caught_up[pk] = (ids, vectors)

        def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            """Every embedded vector once: the checkpoint's (one part at a time), then the catch-up."""
            seen: set[int] = set()
            for pk, ids, vectors in checkpoint.entries(latest):
                if pk in done and pk not in caught_up and pk not in seen:
                    seen.add(pk)
                    yield ids, vectors
            yield from caught_up.values()

        chunks = sum(len(ids) for ids in done.values())
        dense = DenseIndex.build_batches(embedder.dim, batches, chunks, config=store.dense_config)
        with store.writer_lock():
            index_version = store.write(IndexSnapshot(0, target.model_id, dense, lexical))
        for ids, vectors in batches():
            _write_vectors(ids, vectors)
        if before_flip is not None:
            before_flip()
        set_active(target)
    checkpoint.clear()
    log.info("embedding model switched: %s -> %s (%d chunks)", current.model_id, target.model_id, total)
    return SwitchResult(current.model_id, target.model_id, chunks, index_version, switched=True, resumed=resumed)
