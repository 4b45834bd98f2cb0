"""bf16 embedding on CPU: the setting resolves, loads once, and stays close to fp32."""

from __future__ import annotations

import numpy as np
import pytest

from kb.index import get_embedder
from kb.retrieval.embedding import cpu_has_bf16, resolve_dtype

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
    with pytest.raises(ValueError, match="CAIRN_EMBED_DTYPE"):
        resolve_dtype("fp8", None)


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
