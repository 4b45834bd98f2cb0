"""Context packing: passages go in best-first and whole until the model's window is full."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.api import generate, load_generator, pack
from inference.backends.transformers_backend import TransformersGenerator
from inference.prompting import PromptTooLong, format_passages, pack_passages
from inference.types import GenerationRequest, Passage

pytestmark = pytest.mark.usefixtures("fresh_generators")


def passages(texts: list[str]) -> tuple[Passage, ...]:
    return tuple(
        Passage(number=i + 1, chunk_id=100 + i, document_id=1, title=f"doc{i + 1}", page=None,
                heading="", text=text)
        for i, text in enumerate(texts)
    )


def words(request: GenerationRequest) -> int:
    """A stand-in tokenizer: one token per word of the rendered passages and question."""
    return len(format_passages(request.passages).split()) + len(request.question.split()) + 10


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=60), max_size=12),
    window=st.integers(min_value=20, max_value=400),
    answer=st.integers(min_value=1, max_value=50),
)
def test_keeps_the_longest_fitting_prefix_of_whole_passages(
    lengths: list[int], window: int, answer: int
) -> None:
    request = GenerationRequest(
        question="what is it", passages=passages(["w " * n for n in lengths]), max_new_tokens=answer
    )
    budget = window - answer
    try:
        packed = pack_passages(request, prompt_tokens=words, window=window)
    except PromptTooLong:
        assert words(replace(request, passages=())) > budget
        return
    k = len(packed.passages)
    assert packed.passages == request.passages[:k]  # best first, numbering intact, none cut
    assert words(packed) <= budget
    if k < len(request.passages):  # the next one would not have fitted
        assert words(replace(request, passages=request.passages[: k + 1])) > budget
    assert pack_passages(packed, prompt_tokens=words, window=window) == packed  # idempotent


def test_real_tokenizer_and_small_window(tiny_qwen2: str) -> None:
    texts = [f"Passage number {i} says the holiday allowance is {20 + i} days. " * 3 for i in range(5)]
    request = GenerationRequest(question="How many holiday days?", passages=passages(texts), max_new_tokens=8)
    probe = load_generator("transformers", tiny_qwen2)
    assert isinstance(probe, TransformersGenerator)
    sizes = [probe.prompt_tokens(replace(request, passages=request.passages[:k])) for k in range(6)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[5]
    # A window that holds the prompt with two passages and the answer, but not three.
    window = sizes[2] + request.max_new_tokens + (sizes[3] - sizes[2]) // 2
    generator = load_generator("transformers", tiny_qwen2, context_window=window)
    assert isinstance(generator, TransformersGenerator) and generator.context_window == window

    answer = generate(generator, request)
    assert (answer.passages_used, answer.passages_offered) == (2, 5)
    assert set(answer.cited_numbers) <= {1, 2}

    prompt_ids = generator.encode(request)["input_ids"][0]
    assert len(prompt_ids) + request.max_new_tokens <= window
    prompt = generator.tokenizer.decode(prompt_ids)
    assert texts[0].strip() in prompt and texts[1].strip() in prompt  # whole
    assert "[3] (doc3)" not in prompt and texts[2].split(".")[0] not in prompt  # nothing of the third


def test_the_default_window_is_the_models_own(tiny_qwen2: str) -> None:
    generator = load_generator("transformers", tiny_qwen2, prompt="cited")
    assert generator.context_window == 2048  # type: ignore[attr-defined]  # max_position_embeddings
    request = GenerationRequest(
        question="q", passages=passages(["short text"] * 3), max_new_tokens=8, prompt="cited"
    )
    assert pack(generator, request) is request


def test_too_long_a_question_is_a_clear_error(tiny_qwen2: str) -> None:
    generator = load_generator("transformers", tiny_qwen2, context_window=64)
    request = GenerationRequest(question="why " * 100, passages=passages(["x"]), max_new_tokens=8)
    with pytest.raises(PromptTooLong, match="64-token window"):
        generate(generator, request)


def test_extractive_takes_every_passage() -> None:
    request = GenerationRequest(question="q", passages=passages(["a b c"] * 30))
    answer = generate(load_generator("extractive"), request)
    assert answer.passages_used == answer.passages_offered == 30
