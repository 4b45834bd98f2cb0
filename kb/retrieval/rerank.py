"""The optional reranking stage: a cross-encoder scores (query, passage) pairs.

Any local sentence-transformers ``CrossEncoder`` directory works
(``CAIRN_RERANKER``); it is loaded once per process, offline only
(``local_files_only``: nothing is ever downloaded), and scores passages in
batches.  The stage sees only passages the permission filter already let
through: it runs on the fused top-N of a search that was restricted to the
user's allowed set in both legs.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A cross-encoder's quality comes from reading query and passage together;
# past this many tokens, latency grows and the passage tail adds little.
MAX_PAIR_TOKENS = 512


class RerankerUnavailable(Exception):
    """The configured reranker directory cannot be found or loaded."""


class Reranker(Protocol):
    model_id: str

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray: ...


def reranker_model_id(path: Path) -> str:
    """A stable id naming the model: directory name plus a digest of its config."""
    config = path / "config.json"
    digest = hashlib.sha256(config.read_bytes() if config.is_file() else b"").hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-") or "reranker"
    return f"{slug}-{digest}"


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder from a local directory; higher score = more relevant."""

    def __init__(
        self, path: str | os.PathLike[str], *, device: str | None = None, batch_size: int = 32,
        dtype: str = "float32",
    ) -> None:
        self.path = Path(path).expanduser()
        if not (self.path / "config.json").is_file():
            raise RerankerUnavailable(
                f"CAIRN_RERANKER={self.path} is not a cross-encoder model directory (no config.json)"
            )
        from sentence_transformers import CrossEncoder

        try:
            self._model = CrossEncoder(str(self.path), device=device, local_files_only=True)
        except Exception as exc:  # the library raises many types for a bad directory
            raise RerankerUnavailable(f"Cannot load the reranker at {self.path}: {exc}") from exc
        # sentence-transformers renamed max_length to max_seq_length (v5+); accept either.
        attr = "max_seq_length" if hasattr(type(self._model), "max_seq_length") else "max_length"
        limit = getattr(self._model, attr, None) or MAX_PAIR_TOKENS
        config = getattr(self._model, "config", None)
        positions = getattr(config, "max_position_embeddings", None) or MAX_PAIR_TOKENS
        setattr(self._model, attr, int(min(limit, positions, MAX_PAIR_TOKENS)))
        if dtype == "bfloat16":
            import torch

            self._model.to(torch.bfloat16)
        elif dtype != "float32":
            raise RerankerUnavailable(f"CAIRN_RERANK_DTYPE must be float32 or bfloat16, not {dtype!r}")
        self.dtype = dtype
        self.model_id = reranker_model_id(self.path)
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """One relevance score per passage (the model's raw output, or its first logit)."""
        if not passages:
            return np.zeros(0, dtype=np.float32)
        # One model per process; torch already uses every core, so
        # concurrent calls would only fight over them.
        with self._lock:
            scores = self._model.predict(
                [(query, passage) for passage in passages],
                batch_size=self.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        scores = np.asarray(scores, dtype=np.float32)
        if scores.ndim == 2:  # a multi-label head: the first label is the relevance logit
            scores = scores[:, 0]
        return scores.reshape(len(passages))


_cache: dict[tuple[str, str | None, int, str], CrossEncoderReranker] = {}
_cache_lock = threading.Lock()


def load_reranker(
    path: str | None, *, device: str | None = None, batch_size: int = 32, dtype: str = "float32"
) -> Reranker | None:
    """The process-wide reranker for this configuration, or None when reranking is off (empty path)."""
    if not path:
        return None
    key = (str(Path(path).expanduser().resolve()), device, batch_size, dtype)
    with _cache_lock:
        reranker = _cache.get(key)
        if reranker is None:
            reranker = CrossEncoderReranker(path, device=device, batch_size=batch_size, dtype=dtype)
            _cache[key] = reranker
        return reranker


def rerank_order(scores: np.ndarray) -> list[int]:
    """Positions sorted by score, best first; ties keep the fused order (stable)."""
    return [int(i) for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")]
