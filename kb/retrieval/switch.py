"""The model switch's core: the new model's index, built alongside the active one.

``SwitchBuild`` assembles the target model's index while searches keep
using the active one: the BM25 terms in memory, the vectors of phase 1 in an
on-disk checkpoint (``SwitchCheckpoint``, so an interrupted switch resumes
instead of re-embedding everything), the catch-up of phase 2 in memory.  At
the end the dense index is built from the checkpoint one part at a time,
so memory holds the BM25 index and the new dense index, not every vector
(1.5 GB at 1M chunks) besides.  ``ingestion.model_switch`` reads the
versions and their chunks from the database and decides the phases.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from kb.retrieval.dense import DenseIndex
from kb.retrieval.index_store import IndexSnapshot, IndexStore
from kb.retrieval.lexical import BM25Index
from kb.retrieval.writer import ChunkBatch

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "switch-checkpoint"


class VersionSpan(Protocol):
    """What the switch knows of a document version: its id and the range of its chunk ids.

    A version's chunks never change, so an unchanged range means the same chunks.
    """

    @property
    def pk(self) -> int: ...

    @property
    def chunk_id_start(self) -> int | None: ...

    @property
    def chunk_count(self) -> int: ...


V = TypeVar("V", bound=VersionSpan)


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

    def entries(self, versions: Mapping[int, VersionSpan]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
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

    def save(self, embedded: Mapping[int, tuple[VersionSpan, np.ndarray, np.ndarray]]) -> None:
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


class SwitchBuild:
    """The target model's index during a switch; ``write`` makes it a version of the target's store.

    ``add`` (phase 1) checkpoints every ``checkpoint_every`` chunks;
    ``catch_up`` (phase 2, under the active index's writer lock) keeps its
    few vectors in memory; ``drop`` forgets a version removed meanwhile.
    """

    def __init__(self, store: IndexStore, dim: int, *, checkpoint_every: int, restart: bool = False) -> None:
        self.store = store
        self.dim = dim
        self.checkpoint_every = checkpoint_every
        self.lexical = BM25Index()
        self.checkpoint = SwitchCheckpoint(store.dir / CHECKPOINT_DIR, store.model_id, dim)
        if restart:
            self.checkpoint.clear()
        self.done: dict[int, np.ndarray] = {}  # version pk -> chunk ids embedded with the target model
        self._unsaved: dict[int, tuple[VersionSpan, np.ndarray, np.ndarray]] = {}
        self._since_checkpoint = 0
        self._caught_up: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def chunks(self) -> int:
        return sum(len(ids) for ids in self.done.values())

    def _index(self, pk: int, ids: np.ndarray, tokens: list[list[str]]) -> None:
        self.lexical.add(ids, tokens)
        self.done[pk] = ids

    def resume(self, versions: Mapping[int, V], tokens: Callable[[V], list[list[str]]]) -> int:
        """Take what an interrupted run checkpointed for these versions; returns the chunks taken.

        BM25 needs the terms, which the checkpoint does not hold: ``tokens``
        makes them again (re-tokenising is cheap next to re-embedding).
        """
        for pk, ids, _ in self.checkpoint.entries(versions):
            if pk not in self.done:
                self._index(pk, ids, tokens(versions[pk]))
        return self.chunks

    def add(self, version: VersionSpan, batch: ChunkBatch) -> None:
        self._index(version.pk, batch.ids, batch.tokens)
        self._unsaved[version.pk] = (version, batch.ids, batch.vectors)
        self._since_checkpoint += len(batch)
        if self._since_checkpoint >= self.checkpoint_every:
            self.flush()

    def flush(self) -> None:
        """Checkpoint what ``add`` took since the last checkpoint."""
        self.checkpoint.save(self._unsaved)
        self._unsaved.clear()
        self._since_checkpoint = 0

    def drop(self, pk: int) -> None:
        self.lexical.remove(self.done.pop(pk))

    def catch_up(self, pk: int, batch: ChunkBatch) -> None:
        self._index(pk, batch.ids, batch.tokens)
        self._caught_up[pk] = (batch.ids, batch.vectors)

    def batches(self, versions: Mapping[int, VersionSpan]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every vector of the switch once: the checkpoint's (one part at a time), then the catch-up."""
        seen: set[int] = set()
        for pk, ids, vectors in self.checkpoint.entries(versions):
            if pk in self.done and pk not in self._caught_up and pk not in seen:
                seen.add(pk)
                yield ids, vectors
        yield from self._caught_up.values()

    def write(self, versions: Mapping[int, VersionSpan]) -> int:
        """Build the dense index and write both legs as a new version of the target's store."""
        dense = DenseIndex.build_batches(self.dim, lambda: self.batches(versions), self.chunks,
                                         config=self.store.dense_config)
        with self.store.writer_lock():
            return self.store.write(IndexSnapshot(0, self.store.model_id, dense, self.lexical))
