"""The dense leg: a FAISS ``IndexIDMap2`` keyed by chunk id."""

from __future__ import annotations

import os

import faiss
import numpy as np


class DenseIndex:
    """Exact inner-product search over normalised vectors, keyed by chunk id.

    Upserts are keyed by id (adding an id that is present replaces it), so
    the single index writer can replay a batch after a crash without
    creating duplicates.  Searches may run concurrently from many threads on
    an index nobody mutates; the writer mutates its own loaded copy.
    """

    def __init__(self, dim: int, index: faiss.IndexIDMap2 | None = None) -> None:
        if dim <= 0:
            raise ValueError("dimension must be positive")
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] != ids.shape[0]:
            raise ValueError(f"expected {ids.shape[0]} vectors of dimension {self.dim}, got {vectors.shape}")
        if len(ids) == 0:
            return
        self.remove(ids)
        self.index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0 or len(self) == 0:
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))))

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (ids, scores), best first; ``allowed`` is a boolean mask by chunk id.

        The mask is applied inside FAISS (an id selector), so forbidden
        chunks are never ranked, rather than filtered from a top-k afterwards.
        """
        if len(self) == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        k = min(k, len(self))
        params = None
        if allowed is not None:
            if not allowed.any():
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            bitmap = np.packbits(allowed.astype(np.uint8, copy=False), bitorder="little")
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
            params = faiss.SearchParameters(sel=selector)
        distances, labels = self.index.search(query, k, params=params)
        keep = labels[0] >= 0
        return labels[0][keep].astype(np.int64), distances[0][keep].astype(np.float32)

    def save(self, path: str | os.PathLike[str]) -> None:
        faiss.write_index(self.index, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DenseIndex:
        index = faiss.read_index(os.fspath(path))
        if not isinstance(index, faiss.IndexIDMap2):
            index = faiss.downcast_index(index)
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"{path} is not an IndexIDMap2")
        return cls(index.d, index)
