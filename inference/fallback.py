"""What replaces a generated answer that says nothing: quotes from the passages, labelled as such.

Small models given numbered passages sometimes reply with nothing but a
citation marker ("[1]"): the 0.5B Qwen did so for 41 of 60 SQuAD questions
before the prompt carried a worked example. Such a reply is never returned
as an answer. The extractive backend's best sentence (or two) is returned
instead, under a label that says the model gave no answer of its own, and
the answer records ``fallback="extractive"`` so the API and the UI can say so.

Invariant: the check runs on every generated answer, wherever it is
assembled (the pool's ``done`` event, ``inference.api.generate``), after
markers are normalised; an answer that is not bare is returned unchanged.
"""

from __future__ import annotations

from inference.backends.extractive import NO_PASSAGES_MESSAGE, ExtractiveGenerator
from inference.citations import is_bare_marker
from inference.types import GenerationRequest

FALLBACK_LABEL = (
    "The language model gave no answer of its own, only a citation; extracts from your documents:"
)
FALLBACK_EXTRACTIVE = "extractive"
# One quote reads as the answer; more would bury it (and the model's pick is unknown).
FALLBACK_QUOTES = 2


def answer_or_fallback(
    request: GenerationRequest, text: str, *, generated: bool
) -> tuple[str, str]:
    """``(answer, fallback)``: ``text`` and "" when it says something, else extracts and "extractive".

    Quoting backends (``generated=False``) are never replaced: their answer is already extracts.
    """
    if not generated or not is_bare_marker(text):
        return text, ""
    quotes = ExtractiveGenerator(max_quotes=FALLBACK_QUOTES).quotes(request)
    if not quotes:
        return NO_PASSAGES_MESSAGE, FALLBACK_EXTRACTIVE
    return FALLBACK_LABEL + "".join(f"\n\n{quote}" for quote in quotes), FALLBACK_EXTRACTIVE
