"""What replaces a generated answer that says nothing: the model asked plainly, else quotes.

Small models given numbered passages sometimes reply with nothing but a
citation marker ("[1]"): the 0.5B Qwen did so for 41 of 60 SQuAD questions
before the prompt carried a worked example. Such a reply is never returned
as an answer. The model is asked once more, with the plain prompt (the same
passages as unnumbered context, and the question; ``inference.prompting``),
and that answer is returned with a citation attributed afterwards
(``inference.attribution``); the answer records ``fallback="plain"``. Only
when that reply says nothing either are the extractive backend's best
sentence (or two) returned, under a label that says the model gave no answer
of its own, with ``fallback="extractive"``, so the API and the UI can say so.

Answers to a plain prompt in the first place (small models' default) get
their citation attributed the same way and no ``fallback``.

Invariant: the check runs on every generated answer, wherever it is
assembled (the pool's ``done`` event, ``inference.api.generate``), after
markers are normalised; an answer to a cited prompt that is not bare is
returned unchanged. The re-ask is one more generation, at most, per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace

from inference.attribution import with_attributed_citation
from inference.backends.extractive import NO_PASSAGES_MESSAGE, ExtractiveGenerator
from inference.citations import is_bare_marker
from inference.types import Finished, GenerationRequest, StreamEvent

logger = logging.getLogger(__name__)

FALLBACK_LABEL = (
    "The language model gave no answer of its own, only a citation; extracts from your documents:"
)
FALLBACK_EXTRACTIVE = "extractive"
FALLBACK_PLAIN = "plain"
# One quote reads as the answer; more would bury it (and the model's pick is unknown).
FALLBACK_QUOTES = 2

# Generates the answer text for a request (the re-ask); the pool and ``inference.api`` pass their model's.
Reask = Callable[[GenerationRequest], str]


def answer_text(events: Iterator[StreamEvent]) -> str:
    """The answer channel of a backend's stream, run to its end (reasoning is dropped)."""
    return "".join(e.text for e in Finished(events) if e.channel == "answer").strip()


def answer_or_fallback(
    request: GenerationRequest, text: str, *, generated: bool, reask: Reask | None = None
) -> tuple[str, str]:
    """``(answer, fallback)``: see the module docstring.

    ``text`` is the model's reply to ``request``; ``reask`` asks the model the
    plain prompt (None: no re-ask, straight to extracts). Quoting backends
    (``generated=False``) are never replaced: their answer is already extracts.
    A re-ask that raises counts as one that said nothing.
    """
    if not generated:
        return text, ""
    if not is_bare_marker(text):
        return (with_attributed_citation(request, text), "") if request.prompt == "plain" else (text, "")
    if reask is not None and request.passages and request.prompt != "plain":
        plain = replace(request, prompt="plain")
        try:
            again = reask(plain)
        except Exception:  # the first answer exists: a failed re-ask must not fail it (or a batch) too
            logger.exception("re-asking request %s with the plain prompt failed", request.request_id)
            again = ""
        if not is_bare_marker(again):
            return with_attributed_citation(plain, again), FALLBACK_PLAIN
    quotes = ExtractiveGenerator(max_quotes=FALLBACK_QUOTES).quotes(request)
    if not quotes:
        return NO_PASSAGES_MESSAGE, FALLBACK_EXTRACTIVE
    return FALLBACK_LABEL + "".join(f"\n\n{quote}" for quote in quotes), FALLBACK_EXTRACTIVE
