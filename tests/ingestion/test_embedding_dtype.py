"""The embedder's precision and batch size: bf16 on CPU, bf16/fp16 on GPUs, a batch for the card."""

from __future__ import annotations

import numpy as np
import pytest

from kb import index
from kb.index import get_embedder
from kb.retrieval import embedding
from kb.retrieval.embedding import cpu_has_bf16, gpu_batch_size, resolve_dtype

TEXTS = [
    "The boiler is descaled every spring by the caretaker.",
    "Parental leave lasts twenty weeks at full pay.",
    "Fire drills happen every March; the assembly point is the car park.",
    "Vitamin D supplementation did not reduce fracture risk in older adults.",
]


def test_the_dtype_setting_resolves_explicit_values_and_auto_by_cpu_support():
    assert resolve_dtype("float32", None) == "float32"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"
    assert resolve_dtype("auto", "cpu") == ("bfloat16" if cpu_has_bf16() else "float32")
    assert resolve_dtype("float16", "cuda") == "float16"
    with pytest.raises(ValueError, match="CAIRN_EMBED_DTYPE"):
        resolve_dtype("fp8", None)


@pytest.mark.parametrize(("native_bf16", "expected"), [(True, "bfloat16"), (False, "float16")])
def test_auto_on_a_gpu_is_bf16_where_native_else_fp16(monkeypatch, native_bf16, expected):
    monkeypatch.setattr(embedding, "cuda_has_bf16", lambda device: native_bf16)
    assert resolve_dtype("auto", "cuda") == expected
    assert resolve_dtype("auto", "cuda:1") == expected
    assert resolve_dtype("float32", "cuda") == "float32", "an explicit setting is kept"
    assert resolve_dtype("auto", "mps") == "float32"


def test_a_gpus_batch_size_follows_its_memory_within_bounds():
    minilm = {"max_tokens": 256, "hidden": 384, "heads": 12, "element_bytes": 2}
    gib = 1024**3
    assert gpu_batch_size(80 * gib, **minilm) == 512   # H100: capped
    assert gpu_batch_size(8 * gib, **minilm) == 256
    assert gpu_batch_size(2 * gib, **minilm) == 64
    assert gpu_batch_size(gib // 2, **minilm) == 32    # floor
    large = {"max_tokens": 512, "hidden": 1024, "heads": 16, "element_bytes": 2}  # a bge-large-sized model
    assert gpu_batch_size(24 * gib, **large) == 128
    assert gpu_batch_size(80 * gib, **large) == 512


def test_on_a_cpu_the_batch_stays_64_unless_configured(settings):
    embedder = get_embedder(None, "cpu", "float32")
    assert embedder.batch_size == 64
    settings.CAIRN_EMBED_BATCH = 0
    assert index.embed_batch_size(embedder) == 64
    settings.CAIRN_EMBED_BATCH = 16
    assert index.embed_batch_size(embedder) == 16


def test_bf16_embeddings_are_float32_unit_vectors_close_to_fp32():
    fp32 = get_embedder(None, "cpu", "float32")
    bf16 = get_embedder(None, "cpu", "bfloat16")

    a, b = fp32.encode(TEXTS), bf16.encode(TEXTS)

    assert bf16.dtype == "bfloat16" and next(bf16._model.parameters()).dtype.is_floating_point
    assert str(next(bf16._model.parameters()).dtype) == "torch.bfloat16"
    assert b.dtype == np.float32 and b.shape == a.shape
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-3)
    assert (a * b).sum(axis=1).min() > 0.99
    # The model is loaded once per process and configuration.
    assert get_embedder(None, "cpu", "bfloat16") is bf16


def test_the_setting_drives_the_default(settings):
    settings.CAIRN_EMBED_DTYPE = "float32"
    assert get_embedder(None, "cpu").dtype == "float32"
    settings.CAIRN_EMBED_DTYPE = "bfloat16"
    assert get_embedder(None, "cpu").dtype == "bfloat16"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_single_query_embeds_as_the_batch_path_does(dtype, tmp_path):
    """The search hot path (``encode_query``) == ``encode`` — also for a model with a default prompt."""
    from kb.retrieval.embedding import SentenceTransformerEmbedder
    from tests.kb.tiny_embedder import build_tiny_embedder

    real = get_embedder(None, "cpu", dtype)
    for text in TEXTS:
        one = real.encode_query(text)
        assert one.dtype == np.float32 and abs(float(np.linalg.norm(one)) - 1) < 1e-5
        assert float(one @ real.encode([text])[0]) > 0.9999

    tiny = SentenceTransformerEmbedder("tiny", build_tiny_embedder(tmp_path), device="cpu", dtype=dtype)
    tiny._model.prompts = {"query": "query: "}
    tiny._model.default_prompt_name = "query"
    prompted, batch = tiny.encode_query(TEXTS[0]), tiny.encode([TEXTS[0]])[0]
    assert float(prompted @ batch) > 0.9999
    tiny._model.default_prompt_name = None
    assert float(prompted @ tiny.encode_query(TEXTS[0])) < 0.9999  # the prompt did change it


@pytest.mark.gpu
def test_on_a_gpu_auto_picks_half_precision_and_a_batch_for_the_card(tmp_path):
    import re

    import torch

    from tests.kb.tiny_embedder import build_tiny_embedder

    # A small model with its own vocabulary: the bundled model (88 MB) need not be on the GPU host.
    model = str(build_tiny_embedder(tmp_path, dim=64, words=re.findall(r"[a-z]+", " ".join(TEXTS).lower())))
    embedder = get_embedder(model, "cuda", "auto")
    expected = "bfloat16" if torch.cuda.get_device_capability()[0] >= 8 else "float16"
    assert embedder.dtype == expected
    assert str(next(embedder._model.parameters()).dtype) == f"torch.{expected}"
    assert 32 <= embedder.batch_size <= 512
    reference = get_embedder(model, "cpu", "float32").encode(TEXTS)
    vectors = embedder.encode(TEXTS)
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert (vectors * reference).sum(axis=1).min() > 0.98
    query = embedder.encode_query(TEXTS[0])
    assert float(query @ vectors[0]) > 0.995


@pytest.mark.slow
def test_the_gpu_ingestion_benchmark_runs_here_on_the_cpu(tmp_path):
    """``benchmarks/gpu/embed.py --device cpu``: the personal worker and bare encode over the same chunks."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "embed.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "DJANGO_", "PYTEST"))}
    done = subprocess.run([sys.executable, "benchmarks/gpu/embed.py", "--docs", "2", "--pages", "2", "--device", "cpu",
                           "--json", str(out)], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["chunks"] > 0 and result["batch_size"] == 64 and result["device"] == "cpu"
    assert result["ratio"] > 0
