"""Generation backends behind one interface, ``Generator``.

A backend turns a ``GenerationRequest`` into a stream of ``StreamEvent``s in
which reasoning is already separated from the answer. Backends are created
by name through ``create_generator``; heavy imports (torch, transformers,
vllm) happen only when such a backend is asked for, so the extractive
default starts fast and works without them, and the ``openai`` backend (a
remote server) needs neither torch nor a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from inference.types import GenerationRequest, StreamEvent

BACKENDS: tuple[str, ...] = ("extractive", "transformers", "vllm", "openai")


class ModelLoadError(Exception):
    """A language model could not be loaded; the message says why, readable by an operator."""


class GenerationError(Exception):
    """Generation failed after the model was loaded (a remote server refused or broke off)."""


@runtime_checkable
class Generator(Protocol):
    """What every backend provides.

    ``name`` is the value of ``Answer.backend``; ``generated`` is False for
    backends that quote the passages instead of generating text.
    ``stream`` yields non-empty events, all ``reasoning`` ones before any
    ``answer`` one; it is a generator that returns "length" when generation
    stopped at ``max_new_tokens`` ("stop" or nothing otherwise:
    ``inference.types.Finished`` keeps it).  A backend may name its model in
    ``model_name`` (else answers carry ``name``).
    """

    name: str
    generated: bool

    def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]: ...


def create_generator(name: str, model_path: str | None = None, **options: Any) -> Generator:
    """A new backend instance (uncached: ``inference.api.load_generator`` caches)."""
    if name == "extractive":
        from inference.backends.extractive import ExtractiveGenerator

        return ExtractiveGenerator(**options)
    if name == "transformers":
        if not model_path:
            raise ModelLoadError(
                "The transformers backend needs a model directory (CAIRN_LLM_PATH), and none was given."
            )
        from inference.backends.transformers_backend import TransformersGenerator

        return TransformersGenerator(model_path, **options)
    if name == "vllm":
        if not model_path:
            raise ModelLoadError(
                "The vllm backend needs a model directory (CAIRN_LLM_PATH), and none was given."
            )
        from inference.backends.vllm_backend import VLLMGenerator

        return VLLMGenerator(model_path, **options)
    if name == "openai":
        from inference.backends.openai_backend import OpenAIGenerator

        return OpenAIGenerator(tokenizer_path=model_path, **options)
    raise ValueError(f"Unknown generation backend {name!r}; valid backends: {', '.join(BACKENDS)}.")
