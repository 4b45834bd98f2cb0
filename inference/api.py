"""The inference facade: the only module other Cairn apps call.

    generator = load_generator("transformers", "/models/DeepSeek-R1-Distill-Qwen-7B")
    answer = generate(generator, GenerationRequest(question=..., passages=...))

This package takes and returns plain dataclasses and imports neither Django
nor any other Cairn app, so it runs the same in a web process, a Celery
worker or a test without settings.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

from inference.backends import (
    BACKENDS,
    GenerationError,
    Generator,
    ModelLoadError,
    create_generator,
)
from inference.citations import cited_numbers, normalize_markers
from inference.fallback import answer_or_fallback, answer_text
from inference.types import Answer, Finished, GenerationRequest, Passage, StreamEvent

__all__ = [
    "BACKENDS",
    "Answer",
    "GenerationError",
    "GenerationRequest",
    "Generator",
    "ModelLoadError",
    "Passage",
    "StreamEvent",
    "clear_generators",
    "generate",
    "load_generator",
    "pack",
    "stream",
]

_generators: dict[tuple[Any, ...], Generator] = {}
# A lock per cache key: two threads asking for the same model at once must not
# both load it (a 7B model twice may not fit on the GPU), while a slow load
# must not hold up requests for a different generator.
_load_locks: dict[tuple[Any, ...], threading.Lock] = {}
_registry_lock = threading.Lock()


def _cache_key(backend: str, model_path: str | None, options: dict[str, Any]) -> tuple[Any, ...]:
    # The extractive backend has no model; CAIRN_LLM_PATH may still be set.
    path = None
    if model_path and backend != "extractive":
        path = os.path.abspath(os.path.expanduser(model_path))
    try:
        frozen = tuple(sorted(options.items()))
        hash(frozen)
    except TypeError as exc:
        raise TypeError(f"Generator options must be hashable values, got {options!r}") from exc
    return (backend, path, frozen)


def load_generator(backend: str, model_path: str | None = None, **options: Any) -> Generator:
    """The generator for ``backend``, created once per process for the same arguments.

    Raises ValueError for an unknown backend (naming the valid ones) and
    ModelLoadError when a model cannot be loaded (missing path, directory,
    config, tokenizer or weights). A failed load is not cached: the next
    call tries again, so fixing the directory needs no restart.
    """
    if backend not in BACKENDS:
        raise ValueError(
            f"Unknown generation backend {backend!r}; valid backends: {', '.join(BACKENDS)}."
        )
    key = _cache_key(backend, model_path, options)
    with _registry_lock:
        generator = _generators.get(key)
        if generator is not None:
            return generator
        load_lock = _load_locks.setdefault(key, threading.Lock())
    with load_lock:
        with _registry_lock:
            generator = _generators.get(key)
        if generator is None:
            generator = create_generator(backend, model_path, **options)
            with _registry_lock:
                _generators[key] = generator
        return generator


def clear_generators() -> None:
    """Forget every cached generator (tests; freeing a model is up to the garbage collector)."""
    with _registry_lock:
        _generators.clear()


def pack(generator: Generator, request: GenerationRequest) -> GenerationRequest:
    """``request`` with the passages that fit ``generator``'s context window (best first, whole).

    Backends without a window (extractive) take every passage. Backends pack
    again inside ``stream`` (idempotent), so calling this first only serves
    to learn which passages the answer can cite.
    """
    packer = getattr(generator, "pack", None)
    return packer(request) if packer is not None else request


def stream(generator: Generator, request: GenerationRequest) -> Iterator[StreamEvent]:
    """The events of ``generator`` for ``request``: reasoning pieces, then answer pieces."""
    return generator.stream(request)


def generate(generator: Generator, request: GenerationRequest) -> Answer:
    """Run ``request`` to completion and assemble the ``Answer``.

    Citation markers in the forms the UI does not link (``【1】``, ``[^1]``,
    ``[1-3]``) are rewritten as ``[n]``; ``cited_numbers`` only names
    passages that were given to the model (those that fit its window).
    """
    offered = len(request.passages)
    request = pack(generator, request)
    reasoning: list[str] = []
    answer: list[str] = []
    finished = Finished(generator.stream(request))
    for event in finished:
        (reasoning if event.channel == "reasoning" else answer).append(event.text)
    numbers = {p.number for p in request.passages}
    highest = max(numbers, default=0)
    text, fallback = answer_or_fallback(
        request, normalize_markers("".join(answer).strip(), highest), generated=generator.generated,
        reask=lambda plain: answer_text(generator.stream(plain)),
    )
    return Answer(
        answer=text,
        reasoning="".join(reasoning).strip(),
        # Passages are numbered 1..n; the set check keeps the invariant even if a caller skips one.
        cited_numbers=tuple(n for n in cited_numbers(text, highest) if n in numbers),
        backend=generator.name,
        generated=generator.generated,
        passages_used=len(request.passages),
        passages_offered=offered,
        model=str(getattr(generator, "model_name", "") or generator.name),
        finish_reason=finished.reason,
        fallback=fallback,
    )
