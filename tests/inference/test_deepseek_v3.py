"""A tiny random DeepseekV3 (DeepSeek-V3/R1's own architecture: MLA + MoE) through the transformers backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.api import generate, load_generator, stream
from inference.backends.transformers_backend import TransformersGenerator
from inference.doctor import estimate_model
from inference.types import GenerationRequest, Passage
from tests.inference.tiny_models import build_tiny_deepseek_v3

pytestmark = pytest.mark.usefixtures("fresh_generators")


@pytest.fixture(scope="module")
def tiny_v3(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_deepseek_v3(tmp_path_factory.mktemp("models") / "DeepSeek-R1-tiny-v3")


REQUEST = GenerationRequest(
    question="How many holiday days do employees get?",
    passages=(Passage(number=1, chunk_id=1, document_id=1, title="Handbook", page=2, heading="Leave",
                      text="Employees get twenty holiday days a year."),),
    max_new_tokens=12,
)


def test_generates_and_streams_through_the_backend(tiny_v3: str) -> None:
    generator = load_generator("transformers", tiny_v3)
    assert isinstance(generator, TransformersGenerator)
    assert type(generator.model).__name__ == "DeepseekV3ForCausalLM"
    # The R1 name and the template that opens <think> both mark it as a reasoning model.
    assert generator.expect_reasoning and generator.system_in_user
    events = list(stream(generator, REQUEST))
    assert events and all(e.text for e in events)
    answer = generate(generator, REQUEST)
    assert answer == generate(generator, REQUEST)  # greedy: reproducible
    # Whatever the random weights say lands in one of the two channels, never as a tag.
    assert (answer.answer + answer.reasoning).strip()
    assert "</think>" not in answer.answer
    assert answer.passages_used == answer.passages_offered == 1


def test_doctor_counts_its_parameters_without_loading_weights(tiny_v3: str) -> None:
    generator = load_generator("transformers", tiny_v3)
    real = sum(p.numel() for p in generator.model.parameters())  # type: ignore[attr-defined]
    estimate = estimate_model(tiny_v3)
    assert estimate.error == "" and estimate.model_type == "deepseek_v3"
    assert estimate.parameters == real
    assert estimate.kv_cache_bytes > 0  # MLA: compressed latent per token
    assert Path(tiny_v3, "config.json").is_file()
