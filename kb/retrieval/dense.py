"""The dense leg: exact while small, approximate (HNSW) above a threshold, keyed by chunk id.

Layout (``DenseIndex``), a small log-structured index:

* **base** — a FAISS ``IndexIDMap2`` over either ``IndexFlatIP`` (exact, while
  the index holds fewer than ``approx_above`` live chunks) or an approximate
  index built from ``approx_spec``: by default ``PQ192x4fs,Refine(SQfp16)``,
  a 4-bit product-quantised fast scan (96 bytes a vector, SIMD lookup
  tables) whose best ``rerank_depth`` candidates are re-scored against the
  vectors kept in float16 (read as a zero-copy numpy view).
  ``benchmarks/dense.py`` chose it: at 1M × 384 random unit vectors it
  reaches recall@10 0.995 in ~6 ms of CPU a query — the same as float32
  refinement (``RFlat``) in half the memory — while HNSW
  on the same kind of data (no cluster structure) reached only 0.26–0.77
  recall@10 at efSearch 64–256 already at 20k vectors.  HNSW specs still work (searched through the id selector with
  ``efSearch`` raised as the allowed share falls).  The base is immutable between merges
  and named by ``base_id``: a new index version that did not merge reuses
  the base file by hard link, and a reader that already holds that base
  keeps the loaded object, so publishing 1,000 new chunks at 1M costs the
  size of the delta, not of the index (and memory does not double).
* **delta** — an exact ``IndexIDMap2(IndexFlatIP)`` of the chunks added since
  the base was built; a scan of a few tens of thousands of vectors is cheap.
* **deleted** — tombstones: ids removed from the base (HNSW cannot delete in
  place).  Every base search filters them through the same id selector as
  permissions.

``merge()`` (the writer runs it when the delta or the tombstones grow past
their limits, and in the periodic compaction) folds the delta into a new
base: new vectors are added to an HNSW base in place; a base with many
tombstones, or one that crosses the flat/approximate threshold, is rebuilt
from the live vectors.

Filtered search keeps recall: when the allowed set is small (at most
``exact_max`` ids) the allowed vectors are gathered and scored exactly;
otherwise the compressed scan asks for ``rerank_depth / share`` candidates
so that about ``rerank_depth`` *allowed* ones reach the exact re-ranking
(recall at a 10% and a 1% allowed set is measured by the benchmark).

On a GPU (``config.device``, ``CAIRN_DENSE_DEVICE``; ``dense_gpu.py``) the
base's stored vectors and the delta are copied to the device once and every
search is an exact scan there, the mask applied before the top-k; searches
arriving together are run as one batch.  ``cpu`` (the default) is the path
above, unchanged.

Threading: readers only search, and several snapshots may share one base
object (and its device copy); the single writer mutates only its own loaded copy.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import faiss
import numpy as np

if TYPE_CHECKING:
    from kb.retrieval.dense_gpu import ExactScan, SearchBatcher

_EMPTY_IDS = np.zeros(0, np.int64)
_EMPTY_SCORES = np.zeros(0, np.float32)
_META = "dense.json"
_DELTA = "dense-delta.faiss"
_DELETED = "dense-deleted.npy"
_LEGACY = "dense.faiss"


@dataclass(frozen=True)
class DenseConfig:
    """Tuning of the dense leg; defaults are the values ``benchmarks/dense.py`` chose at 1M × 384."""

    approx_above: int = 100_000       # live chunks at which the base becomes approximate
    approx_spec: str = "PQ192x4fs,Refine(SQfp16)"  # FAISS factory string of the approximate base
    rerank_depth: int = 500           # candidates re-scored exactly (refine specs)
    max_candidates: int = 50_000      # cap on candidates asked of the compressed scan under a filter
    ef_construction: int = 64
    ef_search: int = 128
    max_ef_search: int = 2048         # cap for filtered searches (efSearch grows as the allowed share falls)
    exact_max: int = 20_000           # allowed sets up to this many ids are scored exactly
    delta_max: int = 50_000           # merge the delta into the base past this many chunks
    tombstone_fraction: float = 0.1   # rebuild the base when this share of it is tombstoned
    device: str = "cpu"               # cpu | auto | cuda | torch-cpu (dense_gpu.py)
    gpu_backend: str = "auto"         # faiss (a FAISS GPU build) | torch | auto: faiss when it sees a GPU


def _unit(query: np.ndarray, dim: int) -> np.ndarray:
    return np.ascontiguousarray(query, dtype=np.float32).reshape(1, dim)


def _flat(dim: int) -> faiss.IndexIDMap2:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


class _DeviceSlot:
    """The device copy of one base, shared by every snapshot that shares the base object."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.scan: ExactScan | None = None


def _sorted_unique(ids: np.ndarray) -> np.ndarray:
    return np.unique(np.ascontiguousarray(ids, dtype=np.int64))


def _bitmap_params(mask: np.ndarray, ef: int | None) -> tuple[faiss.SearchParameters, tuple[object, ...]]:
    """Search parameters with an ``IDSelectorBitmap``; the second value keeps the buffers alive."""
    bitmap = np.packbits(mask.astype(np.uint8, copy=False), bitorder="little")
    selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
    # faiss' generated stubs know neither SearchParametersHNSW nor the keyword constructors SWIG accepts.
    params = (faiss.SearchParametersHNSW(sel=selector, efSearch=ef) if ef  # type: ignore[attr-defined]
              else faiss.SearchParameters(sel=selector))  # type: ignore[call-arg]
    return params, (bitmap, selector)


class DenseIndex:
    """Inner-product search over normalised vectors, keyed by chunk id (see the module docstring).

    Adding an id that is present replaces it (the writer may replay a batch
    after a crash), so ids stay unique across base and delta.
    """

    def __init__(
        self, dim: int, index: faiss.IndexIDMap2 | None = None, *, config: DenseConfig | None = None
    ) -> None:
        if dim <= 0:
            raise ValueError("dimension must be positive")
        self.dim = dim
        self.config = config or DenseConfig()
        self._base: faiss.IndexIDMap2 | None = index if index is not None else _flat(dim)
        self._base_path: Path | None = None
        self.base_id = uuid.uuid4().hex
        self._base_ids = self._read_base_ids()
        self.delta = _flat(dim)
        self.deleted = _EMPTY_IDS
        self._lock = threading.RLock()
        self._live_cache: np.ndarray | None = None
        self._order_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._rows_cache: np.ndarray | None = None
        self._device_base = _DeviceSlot()
        self._device_delta: ExactScan | None = None
        self._batcher: SearchBatcher[tuple[np.ndarray, int, np.ndarray | None], tuple[np.ndarray, np.ndarray]] | None = None

    # ------------------------------------------------------------------ state

    @property
    def approximate(self) -> bool:
        if self._base is None:
            return self._stored_kind == "approximate"
        return not isinstance(faiss.downcast_index(self._base.index), faiss.IndexFlat)

    @property
    def kind(self) -> str:
        return "approximate" if self.approximate else "flat"

    def _read_base_ids(self) -> np.ndarray:
        assert self._base is not None
        return np.sort(faiss.vector_to_array(self._base.id_map).astype(np.int64))

    def _loaded_base(self) -> faiss.IndexIDMap2:
        if self._base is None:
            with self._lock:
                if self._base is None:
                    assert self._base_path is not None
                    self._base = _read_idmap(self._base_path)
        return self._base

    def __len__(self) -> int:
        return len(self._base_ids) - len(self.deleted) + int(self.delta.ntotal)

    def ids(self) -> np.ndarray:
        live_base = np.setdiff1d(self._base_ids, self.deleted, assume_unique=True)
        return np.union1d(live_base, faiss.vector_to_array(self.delta.id_map).astype(np.int64))

    def _in_base(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` are live rows of the base."""
        if len(self._base_ids) == 0:
            return np.zeros(len(ids), bool)
        pos = np.minimum(np.searchsorted(self._base_ids, ids), len(self._base_ids) - 1)
        present = self._base_ids[pos] == ids
        if len(self.deleted):
            present &= ~np.isin(ids, self.deleted, assume_unique=False)
        return present

    def _invalidate(self) -> None:
        self._live_cache = None
        self._device_delta = None

    # --------------------------------------------------------------- writing

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] != ids.shape[0]:
            raise ValueError(f"expected {ids.shape[0]} vectors of dimension {self.dim}, got {vectors.shape}")
        if len(ids) == 0:
            return
        self.remove(ids)
        self.delta.add_with_ids(vectors, ids)
        self._invalidate()

    def remove(self, ids: np.ndarray) -> int:
        ids = _sorted_unique(ids)
        if len(ids) == 0 or len(self) == 0:
            return 0
        removed = 0
        if self.delta.ntotal:
            removed += int(self.delta.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))))
        in_base = ids[self._in_base(ids)]
        if len(in_base):
            self.deleted = np.union1d(self.deleted, in_base)
            removed += len(in_base)
        self._invalidate()
        return removed

    def needs_merge(self) -> bool:
        live = len(self)
        want_approx = live >= self.config.approx_above
        base_n = len(self._base_ids)
        return bool(
            self.delta.ntotal > self.config.delta_max
            or (base_n and len(self.deleted) > self.config.tombstone_fraction * base_n)
            or (want_approx and (base_n == 0 or not self.approximate))
            or (self.approximate and live < self.config.approx_above // 2)
        )

    def merge(self) -> None:
        """Fold the delta into a new base (and drop tombstones); the old base object is left untouched."""
        live = len(self)
        want_approx = live >= self.config.approx_above
        delta_ids = faiss.vector_to_array(self.delta.id_map).astype(np.int64)
        delta_vectors = self.delta.index.reconstruct_n(0, self.delta.ntotal) if self.delta.ntotal else None
        base = self._loaded_base()
        if want_approx and self.approximate and len(self._base_ids) > 0 and not len(self.deleted):
            # HNSW accepts adds: extend the base in place (a copy if a reader shares the object).
            new_base = cast(faiss.IndexIDMap2, faiss.clone_index(base)) if self._base_shared else base
            if delta_vectors is not None:
                new_base.add_with_ids(delta_vectors, delta_ids)
        else:
            ids, vectors = self._live_base_vectors()
            if delta_vectors is not None:
                ids = np.concatenate([ids, delta_ids])
                vectors = np.concatenate([vectors, delta_vectors])
            if want_approx and self.approximate:
                # Tombstones to drop: keep the trained quantiser (no k-means again), re-add the live rows.
                inner = faiss.clone_index(faiss.downcast_index(base.index))
                inner.reset()
                new_base = faiss.IndexIDMap2(inner)
                new_base.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64))
            else:
                new_base = self._build(ids, vectors, approximate=want_approx)
        self._base = new_base
        self._base_shared = False
        self._base_path = None
        self.base_id = uuid.uuid4().hex
        self._base_ids = self._read_base_ids()
        self.delta = _flat(self.dim)
        self.deleted = _EMPTY_IDS
        self._order_cache = None
        self._rows_cache = None
        self._device_base = _DeviceSlot()
        self._invalidate()

    def _build(self, ids: np.ndarray, vectors: np.ndarray, *, approximate: bool) -> faiss.IndexIDMap2:
        index = self._empty_base(approximate, lambda: vectors[_training_picks(len(vectors))])
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64))
        return index

    def _empty_base(self, approximate: bool, sample: Callable[[], np.ndarray]) -> faiss.IndexIDMap2:
        """A flat base, or the configured approximate one trained on ``sample()`` (asked only if it needs it)."""
        if not approximate:
            return _flat(self.dim)
        inner = faiss.index_factory(self.dim, self.config.approx_spec, faiss.METRIC_INNER_PRODUCT)
        hnsw = getattr(faiss.downcast_index(inner), "hnsw", None)
        if hnsw is not None:
            hnsw.efConstruction = self.config.ef_construction
            hnsw.efSearch = self.config.ef_search
        if not inner.is_trained:
            inner.train(np.ascontiguousarray(sample(), np.float32))
        return faiss.IndexIDMap2(inner)

    def _live_base_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        base = self._loaded_base()
        if base.ntotal == 0:
            return _EMPTY_IDS, np.zeros((0, self.dim), np.float32)
        ids = faiss.vector_to_array(base.id_map).astype(np.int64)
        vectors = base.index.reconstruct_n(0, base.ntotal)
        if len(self.deleted):
            keep = ~np.isin(ids, self.deleted)
            ids, vectors = ids[keep], vectors[keep]
        return ids, vectors

    @classmethod
    def build_batches(
        cls, dim: int, batches: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], total: int, *,
        config: DenseConfig | None = None,
    ) -> DenseIndex:
        """``build`` over ``total`` vectors that ``batches()`` yields as ``(ids, vectors)`` pieces.

        Holds one piece at a time besides the index (a model switch at 1M
        chunks would otherwise hold 1.5 GB of float32 vectors, twice).  An
        approximate index reads the pieces twice: once for its training
        sample — the same rows ``build`` samples from the concatenation —
        and once to add them.
        """
        index = cls(dim, config=config)
        if total <= 0:
            return index

        def sample() -> np.ndarray:
            wanted = _training_picks(total)
            order = np.argsort(wanted)  # rows are met in position order, and placed in sample order
            picks = wanted[order]
            rows = np.empty((len(picks), dim), np.float32)
            offset = 0
            for _, vectors in batches():
                lo, hi = np.searchsorted(picks, [offset, offset + len(vectors)])
                rows[order[lo:hi]] = vectors[picks[lo:hi] - offset]
                offset += len(vectors)
            if offset != total:
                raise ValueError(f"the batches hold {offset} vectors, not {total}")
            return rows

        base = index._empty_base(total >= index.config.approx_above, sample)
        added = 0
        for ids, vectors in batches():
            if len(ids):
                base.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64))
                added += len(ids)
        if added != total:
            raise ValueError(f"the batches hold {added} vectors, not {total}")
        index._base = base
        index._base_ids = index._read_base_ids()
        if len(np.unique(index._base_ids)) != len(index._base_ids):
            raise ValueError("the batches repeat chunk ids")
        return index

    @classmethod
    def build(
        cls, dim: int, ids: np.ndarray, vectors: np.ndarray, *, config: DenseConfig | None = None
    ) -> DenseIndex:
        """A fresh index over ``ids``/``vectors``, flat or approximate by the configured threshold."""
        index = cls(dim, config=config)
        ids = np.ascontiguousarray(ids, np.int64)
        if len(ids):
            index._base = index._build(ids, vectors, approximate=len(ids) >= index.config.approx_above)
            index._base_ids = index._read_base_ids()
        return index

    # -------------------------------------------------------------- searching

    def _live_mask(self, allowed: np.ndarray | None) -> np.ndarray | None:
        """``allowed`` minus tombstones (None when neither filters anything)."""
        if not len(self.deleted):
            return allowed
        if allowed is None:
            if self._live_cache is None:
                size = int(max(self._base_ids[-1], self.deleted[-1])) + 1
                mask = np.ones(size, bool)
                mask[self.deleted] = False
                self._live_cache = mask
            return self._live_cache
        mask = allowed.copy()
        dead = self.deleted[self.deleted < len(mask)]
        mask[dead] = False
        return mask

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (ids, scores), best first; ``allowed`` is a boolean mask by chunk id.

        The mask is applied inside the search (an id selector or an exact
        scan of the allowed vectors), never as a filter on a top-k afterwards.
        """
        if len(self) == 0 or k <= 0:
            return _EMPTY_IDS, _EMPTY_SCORES
        if allowed is not None and not allowed.any():
            return _EMPTY_IDS, _EMPTY_SCORES
        q = _unit(query, self.dim)
        if self.config.device != "cpu" and self._device() != "cpu":
            return self._device_batcher().submit((q[0], k, allowed))
        results = [self._search_delta(q, k, allowed), self._search_base(q, k, allowed)]
        ids = np.concatenate([r[0] for r in results])
        scores = np.concatenate([r[1] for r in results])
        order = np.argsort(-scores, kind="stable")[:k]
        return ids[order], scores[order]

    def search_batch(
        self, queries: np.ndarray, k: int, allowed: Sequence[np.ndarray | None] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``search`` for each row of ``queries`` (``allowed[i]`` is row i's mask); one batch on a GPU."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        masks = list(allowed) if allowed is not None else [None] * len(queries)
        if len(masks) != len(queries):
            raise ValueError(f"{len(queries)} queries but {len(masks)} allowed masks")
        if self.config.device == "cpu" or self._device() == "cpu" or len(self) == 0 or k <= 0:
            return [self.search(q, k, mask) for q, mask in zip(queries, masks, strict=True)]
        return self._device_search(queries, k, masks)

    # ------------------------------------------------------------ on a GPU

    def _device(self) -> str:
        from kb.retrieval.dense_gpu import resolve_device

        return resolve_device(self.config.device)

    def warm_device(self) -> None:
        """Copy the base and the delta to the search device now (else the first search does)."""
        if self.config.device != "cpu" and self._device() != "cpu" and len(self):
            self._device_scans()

    def _device_batcher(
        self,
    ) -> SearchBatcher[tuple[np.ndarray, int, np.ndarray | None], tuple[np.ndarray, np.ndarray]]:
        from kb.retrieval.dense_gpu import SearchBatcher

        if self._batcher is None:
            with self._lock:
                if self._batcher is None:
                    self._batcher = SearchBatcher(self._device_requests)
        return self._batcher

    def _device_requests(
        self, requests: list[tuple[np.ndarray, int, np.ndarray | None]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Concurrent searches as one batch (at the largest k asked; each keeps its own k)."""
        queries = np.stack([q for q, _, _ in requests])
        results = self._device_search(queries, max(k for _, k, _ in requests), [a for _, _, a in requests])
        return [(ids[:k], scores[:k]) for (ids, scores), (_, k, _) in zip(results, requests, strict=True)]

    def _device_search(
        self, queries: np.ndarray, k: int, allowed: Sequence[np.ndarray | None]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Exact top-k of base and delta on the device, tombstones and ``allowed`` masked before the top-k."""
        base, delta = self._device_scans()
        parts = []
        if base is not None:
            parts.append(base.search(queries, k, [self._live_mask(a) for a in allowed]))
        if delta is not None:
            parts.append(delta.search(queries, k, list(allowed)))
        if not parts:
            return [(_EMPTY_IDS, _EMPTY_SCORES) for _ in range(len(queries))]
        ids = np.concatenate([p[0] for p in parts], axis=1)
        scores = np.concatenate([p[1] for p in parts], axis=1)
        results = []
        for row_ids, row_scores in zip(ids, scores, strict=True):
            order = np.argsort(-row_scores, kind="stable")[:k]
            order = order[np.isfinite(row_scores[order])]
            results.append((row_ids[order], row_scores[order]))
        return results

    def _device_scans(self) -> tuple[ExactScan | None, ExactScan | None]:
        """The base's device copy (shared with snapshots of the same base) and this version's delta."""
        from kb.retrieval.dense_gpu import exact_scan

        device, backend = self._device(), self.config.gpu_backend
        slot = self._device_base
        if slot.scan is None and len(self._base_ids):
            with slot.lock:
                if slot.scan is None:
                    slot.scan = exact_scan(self._base_blocks(), self._row_ids(), self.dim, device=device,
                                           backend=backend, rows_vectors=self._rows_vectors)
        delta = self._device_delta
        if delta is None and self.delta.ntotal:
            with self._lock:
                if self._device_delta is None:
                    matrix = _flat_matrix(cast(faiss.IndexFlat, faiss.downcast_index(self.delta.index)))
                    delta_ids = faiss.vector_to_array(self.delta.id_map).astype(np.int64)
                    self._device_delta = exact_scan([matrix], delta_ids, self.dim, device=device, backend=backend,
                                                    rows_vectors=lambda rows: matrix[rows])
                delta = self._device_delta
        return slot.scan, delta

    def _base_blocks(self, step: int = 65_536) -> Iterator[np.ndarray]:
        """The base's stored vectors, a block of rows at a time (float32, or float16 for ``SQfp16``)."""
        matrix = self._exact_matrix()
        total = int(self._loaded_base().ntotal)
        for at in range(0, total, step):
            if matrix is not None:
                yield matrix[at:at + step]
            else:
                yield self._exact_storage().reconstruct_n(at, min(step, total - at))

    def _search_delta(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self.delta.ntotal == 0:
            return _EMPTY_IDS, _EMPTY_SCORES
        params, keep = (None, ()) if allowed is None else _bitmap_params(allowed, None)
        distances, labels = self.delta.search(q, min(k, int(self.delta.ntotal)), params=params)
        del keep
        hit = labels[0] >= 0
        return labels[0][hit].astype(np.int64), distances[0][hit].astype(np.float32)

    def _search_base(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if len(self._base_ids) == 0:
            return _EMPTY_IDS, _EMPTY_SCORES
        if allowed is not None and int(np.count_nonzero(allowed)) <= self.config.exact_max:
            return self._exact_over(q, k, allowed)
        mask = self._live_mask(allowed)
        if not self.approximate:
            return self._flat_scan(q, k, mask)
        inner = faiss.downcast_index(self._loaded_base().index)
        if isinstance(inner, faiss.IndexRefine):
            return self._refine_search(inner, q, k, mask)
        return self._graph_search(q, k, mask)

    def _share(self, mask: np.ndarray | None) -> float:
        if mask is None:
            return 1.0
        return max(1e-6, min(1.0, int(np.count_nonzero(mask)) / max(1, len(self._base_ids))))

    def _refine_search(
        self, inner: faiss.IndexRefine, q: np.ndarray, k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Compressed-code scan for candidates, then exact scores of the allowed candidates.

        With an allowed set covering a share ``s`` of the index the scan asks
        for ``depth / s`` candidates, so about ``depth`` allowed ones reach
        the exact re-ranking whatever the filter: recall does not fall with
        the share (measured in ``benchmarks/dense.py``).
        """
        row_ids = self._row_ids()
        depth = max(self.config.rerank_depth, 4 * k)
        wanted = int(min(len(row_ids), self.config.max_candidates, np.ceil(depth / self._share(mask))))
        _, rows = faiss.downcast_index(inner.base_index).search(q, wanted)
        rows = rows[0][rows[0] >= 0]
        if mask is not None:
            ids = row_ids[rows]
            inside = ids < len(mask)
            keep = np.zeros(len(rows), bool)
            keep[inside] = mask[ids[inside]]
            rows = rows[keep]
        if len(rows) == 0:
            return _EMPTY_IDS, _EMPTY_SCORES
        scores = self._rows_vectors(rows) @ q[0]
        if len(scores) > k:
            top = np.argpartition(-scores, k - 1)[:k]
            rows, scores = rows[top], scores[top]
        order = np.argsort(-scores, kind="stable")
        return row_ids[rows[order]], scores[order].astype(np.float32)

    def _graph_search(self, q: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """HNSW through the id selector, efSearch raised as the allowed share falls."""
        ef = int(min(self.config.max_ef_search, max(self.config.ef_search, k) / self._share(mask) ** 0.5))
        ef = max(ef, k)
        if mask is None:
            params: faiss.SearchParameters = faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]  # not in faiss' stubs
            keep: tuple[object, ...] = ()
        else:
            params, keep = _bitmap_params(mask, ef)
        distances, labels = self._loaded_base().search(q, min(k, len(self._base_ids)), params=params)
        del keep
        hit = labels[0] >= 0
        return labels[0][hit].astype(np.int64), distances[0][hit].astype(np.float32)

    def _flat_scan(self, q: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact search of a flat base: one BLAS mat-vec, then the mask (faster than a per-id selector)."""
        matrix = self._exact_matrix()
        assert matrix is not None
        row_ids = self._row_ids()
        scores = matrix @ q[0]
        if mask is not None:
            inside = row_ids < len(mask)
            keep = np.zeros(len(row_ids), bool)
            keep[inside] = mask[row_ids[inside]]
            scores[~keep] = -np.inf
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.isfinite(scores[top])]
        order = top[np.argsort(-scores[top], kind="stable")]
        return row_ids[order], scores[order].astype(np.float32)

    def _row_ids(self) -> np.ndarray:
        """The chunk id of each row of the base (its ``id_map``)."""
        if self._rows_cache is None:
            with self._lock:
                if self._rows_cache is None:
                    self._rows_cache = faiss.vector_to_array(self._loaded_base().id_map).astype(np.int64)
        return self._rows_cache

    def _exact_storage(self) -> faiss.Index:
        """The index inside the base that holds full vectors (or the closest thing to them)."""
        inner = faiss.downcast_index(self._loaded_base().index)
        if isinstance(inner, faiss.IndexRefine):
            return faiss.downcast_index(inner.refine_index)
        if hasattr(inner, "storage"):
            return faiss.downcast_index(inner.storage)
        return inner

    def _exact_matrix(self) -> np.ndarray | None:
        """The stored vectors as a zero-copy (rows × dim) view: float32 (flat) or float16 (``SQfp16``)."""
        storage = self._exact_storage()
        if isinstance(storage, faiss.IndexFlat):
            xb = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * self.dim)
            return np.asarray(xb).reshape(storage.ntotal, self.dim)
        if isinstance(storage, faiss.IndexScalarQuantizer) and storage.sq.qtype == faiss.ScalarQuantizer.QT_fp16:
            if storage.ntotal == 0:
                return np.zeros((0, self.dim), np.float16)
            codes = faiss.rev_swig_ptr(storage.codes.data(), storage.ntotal * self.dim * 2)
            return np.asarray(codes).view(np.float16).reshape(storage.ntotal, self.dim)
        return None

    def _rows_vectors(self, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of base rows (numpy gathers from a view; faiss decodes other codecs)."""
        matrix = self._exact_matrix()
        if matrix is not None:
            return matrix[rows].astype(np.float32, copy=False)
        return self._exact_storage().reconstruct_batch(np.ascontiguousarray(rows, np.int64))

    def _exact_over(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of the allowed base vectors (small allowed sets)."""
        wanted = np.flatnonzero(allowed).astype(np.int64)
        wanted = wanted[self._in_base(wanted)]
        if len(wanted) == 0:
            return _EMPTY_IDS, _EMPTY_SCORES
        if self._order_cache is None:
            with self._lock:
                if self._order_cache is None:
                    raw = self._row_ids()
                    order = np.argsort(raw, kind="stable")
                    self._order_cache = (raw[order], order)
        sorted_ids, order = self._order_cache
        rows = order[np.searchsorted(sorted_ids, wanted)]
        scores = self._rows_vectors(rows) @ q[0]
        if len(scores) > k:
            top = np.argpartition(-scores, k - 1)[:k]
            wanted, scores = wanted[top], scores[top]
        order = np.argsort(-scores, kind="stable")
        return wanted[order], scores[order].astype(np.float32)

    # ------------------------------------------------------------ persistence

    def save_dir(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write into ``directory``; the base is hard-linked from where it was read when unchanged.

        Returns the files written (for the caller to fsync).
        """
        directory = Path(directory)
        base_name = f"dense-base-{self.base_id}.faiss"
        target = directory / base_name
        linked = False
        if self._base_path is not None and self._base_path.exists():
            try:
                os.link(self._base_path, target)
                linked = True
            except OSError:
                linked = False
        if not linked:
            faiss.write_index(self._loaded_base(), str(target))
        np.save(directory / f"dense-base-ids-{self.base_id}.npy", self._base_ids, allow_pickle=False)
        faiss.write_index(self.delta, str(directory / _DELTA))
        np.save(directory / _DELETED, self.deleted, allow_pickle=False)
        (directory / _META).write_text(json.dumps({
            "format": "cairn-dense", "version": 2, "dim": self.dim, "base_id": self.base_id,
            "base_kind": self.kind if self._base is not None else self._stored_kind, "chunks": len(self),
            "base_chunks": len(self._base_ids), "delta_chunks": int(self.delta.ntotal),
            "tombstones": len(self.deleted),
        }))
        self._stored_kind = self.kind
        return [target, directory / f"dense-base-ids-{self.base_id}.npy", directory / _DELTA,
                directory / _DELETED, directory / _META]

    def mark_saved(self, directory: str | os.PathLike[str]) -> None:
        """``save_dir``'s directory was renamed to ``directory``: link the base from there next time."""
        self._base_path = Path(directory) / f"dense-base-{self.base_id}.faiss"

    def release_base(self) -> None:
        """Drop the in-memory base once it is on disk; it is read again only if needed (a merge).

        What the index writer keeps between passes: it only appends to the
        delta, so holding a ~1 GB base at 1M chunks would be memory for nothing.
        """
        with self._lock:
            if self._base is None or self._base_path is None or not self._base_path.exists():
                return
            self._stored_kind = self.kind
            self._base = None
            self._base_shared = False
            self._order_cache = None
            self._rows_cache = None
            self._live_cache = None
            self._device_base = _DeviceSlot()

    _stored_kind = "flat"
    _base_shared = False

    @classmethod
    def load_dir(
        cls, directory: str | os.PathLike[str], *, config: DenseConfig | None = None,
        reuse: DenseIndex | None = None, lazy: bool = False,
    ) -> DenseIndex:
        """Load a saved index; share ``reuse``'s base when it is the same one; ``lazy`` defers the base."""
        directory = Path(directory)
        if not (directory / _META).exists() and (directory / _LEGACY).exists():
            index = _read_idmap(directory / _LEGACY)
            return cls(index.d, index, config=config)
        meta = json.loads((directory / _META).read_text())
        self = cls.__new__(cls)
        self.dim = int(meta["dim"])
        self.config = config or DenseConfig()
        self._lock = threading.RLock()
        self._live_cache = None
        self._rows_cache = None
        self._device_delta = None
        self._batcher = None
        self.base_id = str(meta["base_id"])
        self._base_path = directory / f"dense-base-{self.base_id}.faiss"
        self._stored_kind = str(meta.get("base_kind", "flat"))
        self._base_shared = False
        if reuse is not None and reuse.base_id == self.base_id and reuse._base is not None:
            self._base = reuse._base
            self._base_shared = reuse._base_shared = True
            self._base_ids = reuse._base_ids
            self._order_cache = reuse._order_cache
            self._rows_cache = reuse._rows_cache
            self._device_base = reuse._device_base
        else:
            self._base = None if lazy else _read_idmap(self._base_path)
            self._base_ids = np.load(directory / f"dense-base-ids-{self.base_id}.npy", allow_pickle=False)
            self._order_cache = None
            self._device_base = _DeviceSlot()
        self.delta = _read_idmap(directory / _DELTA)
        self.deleted = np.load(directory / _DELETED, allow_pickle=False).astype(np.int64)
        if not lazy and self.config.device != "cpu":
            self.warm_device()  # a reader: copy to the GPU now, not in the first search after a new version
        return self

    # Single-file form, kept for tools and tests that move one index around.
    def save(self, path: str | os.PathLike[str]) -> None:
        if self.delta.ntotal or len(self.deleted):
            self.merge()
        faiss.write_index(self._loaded_base(), os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, config: DenseConfig | None = None) -> DenseIndex:
        index = _read_idmap(Path(path))
        return cls(index.d, index, config=config)


def _flat_matrix(index: faiss.IndexFlat) -> np.ndarray:
    """A flat index's vectors as a zero-copy (rows × dim) float32 view."""
    return np.asarray(faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d)).reshape(index.ntotal, index.d)


def _training_picks(n: int) -> np.ndarray:
    """Which of ``n`` vectors train an approximate index (a fixed-seed sample of at most 100k)."""
    return np.random.default_rng(0).permutation(n)[:100_000]


def _read_idmap(path: Path) -> faiss.IndexIDMap2:
    index = faiss.read_index(os.fspath(path))
    if not isinstance(index, faiss.IndexIDMap2):
        index = faiss.downcast_index(index)
    if not isinstance(index, faiss.IndexIDMap2):
        raise ValueError(f"{path} is not an IndexIDMap2")
    return index
