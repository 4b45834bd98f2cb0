"""The facade: backend choice, caching, answer assembly, independence from Django."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.api import ModelLoadError, generate, load_generator, stream
from inference.types import GenerationRequest, StreamEvent

pytestmark = pytest.mark.usefixtures("fresh_generators")


class ScriptedGenerator:
    """A backend that replays fixed events, to test answer assembly alone."""

    name = "scripted"
    generated = True

    def __init__(self, events: list[StreamEvent]) -> None:
        self.events = events

    def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]:
        yield from self.events


def test_unknown_backend_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="extractive, transformers, vllm, openai"):
        load_generator("llamacpp")


def test_transformers_needs_a_model_path() -> None:
    with pytest.raises(ModelLoadError, match="model directory"):
        load_generator("transformers")
    with pytest.raises(ModelLoadError):
        load_generator("transformers", "")


def test_extractive_is_cached_and_ignores_model_path() -> None:
    assert load_generator("extractive") is load_generator("extractive", "/models/unused")
    assert load_generator("extractive", max_quotes=2) is not load_generator("extractive")


def test_unhashable_options_are_refused() -> None:
    with pytest.raises(TypeError, match="hashable"):
        load_generator("extractive", max_quotes=[1])


def test_concurrent_loads_create_one_instance(tiny_qwen2: str) -> None:
    results: list[object] = []
    barrier = threading.Barrier(4)

    def load() -> None:
        barrier.wait()
        results.append(load_generator("transformers", tiny_qwen2))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(r is results[0] for r in results)


def test_generate_joins_channels_and_reads_citations(
    request_two_passages: GenerationRequest,
) -> None:
    scripted = ScriptedGenerator(
        [
            StreamEvent("reasoning", "Look at"),
            StreamEvent("reasoning", " [1]."),
            StreamEvent("answer", "Twenty days【1】, remote [^2]"),
            StreamEvent("answer", " twice [2][7]."),
        ]
    )
    answer = generate(scripted, request_two_passages)
    assert answer.reasoning == "Look at [1]."
    assert answer.answer == "Twenty days[1], remote [2] twice [2][7]."
    assert answer.cited_numbers == (1, 2)
    assert (answer.backend, answer.generated, answer.passages_used) == ("scripted", True, 2)


def test_stream_passes_events_through(request_two_passages: GenerationRequest) -> None:
    events = [StreamEvent("answer", "a"), StreamEvent("answer", "b")]
    assert list(stream(ScriptedGenerator(events), request_two_passages)) == events


def test_inference_imports_neither_django_nor_other_cairn_apps() -> None:
    code = (
        "import sys\n"
        "import inference.api, inference.backends.extractive, inference.backends.transformers_backend\n"
        "import inference.prompting, inference.reasoning, inference.citations, inference.wire\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'django', 'kb', 'access', 'ingestion', 'config', 'celery'})\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
