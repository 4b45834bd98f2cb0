"""Fixtures for the inference tests: tiny Qwen2 models built once per session.

Nothing may come from a model hub, so the hub is switched off before
transformers is imported anywhere in the session.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from inference.api import clear_generators  # noqa: E402
from inference.types import GenerationRequest, Passage  # noqa: E402
from tests.inference.tiny_models import build_tiny_qwen2  # noqa: E402


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random Qwen2 with a plain ChatML template (no reasoning)."""
    return build_tiny_qwen2(tmp_path_factory.mktemp("models") / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_r1(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random Qwen2 dressed as an R1 distill: R1-style name and a template that opens <think>."""
    return build_tiny_qwen2(
        tmp_path_factory.mktemp("models") / "DeepSeek-R1-Distill-Tiny", reasoning=True
    )


@pytest.fixture
def fresh_generators() -> Iterator[None]:
    """An empty generator cache, so a test sees its own loads (and leaves none behind)."""
    clear_generators()
    yield
    clear_generators()


@pytest.fixture
def request_two_passages() -> GenerationRequest:
    return GenerationRequest(
        question="How many holiday days do employees get?",
        passages=(
            Passage(
                number=1,
                chunk_id=10,
                document_id=100,
                title="Staff handbook.pdf",
                page=3,
                heading="Leave",
                text="Employees get twenty holiday days a year. Managers approve leave.",
            ),
            Passage(
                number=2,
                chunk_id=11,
                document_id=101,
                title="Remote work policy",
                page=None,
                heading="",
                text="Remote work is allowed two days a week.",
            ),
        ),
        max_new_tokens=20,
    )
