"""The index writer's core: a new version of one model's index from the last one plus changes.

The caller holds ``IndexStore.writer_lock`` and decides what changes (which
chunks to add, which to remove: ``ingestion.indexing`` reads that from the
database); this module loads the index, applies the changes to both legs,
merges the dense delta when due and writes the new version.

The writer may keep its copy of the index between passes instead of reading
the files again (``keep``; ~1-2 s at 1M chunks).  The copy is taken, not
borrowed: a pass that fails half-way has mutated it, so the next pass reads
the files.  A version written by anyone else (a model switch, a rebuild, a
repair tool) is noticed by its number, and the copy is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb.retrieval.index_store import IndexSnapshot, IndexStore
from kb.retrieval.passages import index_text
from kb.retrieval.tokenize import tokenize


@dataclass(frozen=True)
class ChunkBatch:
    """Chunks as the index takes them: ids, their vectors (one row each) and their BM25 terms."""

    ids: np.ndarray
    vectors: np.ndarray
    tokens: list[list[str]]

    def __len__(self) -> int:
        return len(self.ids)


def chunk_tokens(rows: Sequence[tuple[str, str]], title: str) -> list[list[str]]:
    """The BM25 terms of one document version's chunks, from each chunk's ``(text, heading)``."""
    return [tokenize(index_text(text, heading, title)) for text, heading in rows]


# The writer's own copy of the index as it last wrote it, by index directory.
_kept: dict[Path, IndexSnapshot] = {}
_kept_lock = threading.Lock()


class IndexWriter:
    """Writes new versions of ``store``'s index; call its methods with the store's writer lock held.

    ``dimension`` is asked only when there is no index yet (it may load the
    embedding model); ``keep`` keeps this process's copy between passes.
    """

    def __init__(self, store: IndexStore, *, dimension: Callable[[], int], keep: bool = False) -> None:
        self.store = store
        self.dimension = dimension
        self.keep = keep

    def apply(self, adds: Iterable[ChunkBatch], removes: Iterable[np.ndarray] = (), *, compact: bool = False) -> int:
        """Add and remove chunks (upserts and deletes keyed by chunk id); returns the version written.

        The dense base is read only when this pass has to merge: appending
        costs the delta, not the index.  ``compact`` also merges away the
        delta and every deletion.
        """
        snapshot = self._take_kept() or self.store.load(lazy_dense=True) or self.store.empty(self.dimension())
        for batch in adds:
            _add(snapshot, batch)
        for ids in removes:
            snapshot.dense.remove(ids)
            snapshot.lexical.remove(ids)
        dense = snapshot.dense
        if dense.needs_merge() or (compact and (dense.delta.ntotal or len(dense.deleted))):
            dense.merge()
        version = self.store.write(snapshot)
        self._keep(snapshot)
        return version

    def rebuild(self, adds: Iterable[ChunkBatch]) -> int:
        """A new version holding exactly ``adds`` (e.g. from the database after losing the files)."""
        snapshot = self.store.empty(self.dimension())
        for batch in adds:
            _add(snapshot, batch)
        if snapshot.dense.needs_merge():
            snapshot.dense.merge()
        return self.store.write(snapshot)

    def _take_kept(self) -> IndexSnapshot | None:
        """The kept copy, if it is still the current version of this store; it leaves the cache either way."""
        with _kept_lock:
            snapshot = _kept.pop(self.store.dir, None)
        if snapshot is None or snapshot.model_id != self.store.model_id \
                or snapshot.version != self.store.current_version():
            return None
        return snapshot

    def _keep(self, snapshot: IndexSnapshot) -> None:
        if not self.keep:
            return
        snapshot.dense.release_base()
        snapshot.lexical.release_weights()
        with _kept_lock:
            _kept[self.store.dir] = snapshot


def _add(snapshot: IndexSnapshot, batch: ChunkBatch) -> None:
    if not len(batch):
        return
    snapshot.dense.add(batch.ids, batch.vectors)
    snapshot.lexical.add(batch.ids, batch.tokens)
