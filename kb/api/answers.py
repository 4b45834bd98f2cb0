"""The JSON form of an answer and its citations: one function for the plain and the streamed answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext as _

from inference.backends.extractive import LABEL
from inference.fallback import FALLBACK_LABEL
from inference.types import Answer, Passage
from kb.answering import GenerationFailed, cited_passages

# Keys of ``answer_out`` that the stream sends in its ``citations`` event; the rest go in ``done``.
CITATION_KEYS = ("citation_mode", "citations", "passages")


def citation_out(passage: Passage) -> dict[str, Any]:
    return {
        "number": passage.number, "chunk_id": passage.chunk_id, "document_id": passage.document_id,
        "title": passage.title, "page": passage.page, "heading": passage.heading, "text": passage.text,
    }


def _translated(label: str) -> str:
    # The inference backends write their labels in English (a worker knows no request's language);
    # the web translates them into the asker's language where the answer leaves it.
    if label == LABEL:
        return _("Extracts from your documents (no language model is configured):")
    return _("The language model gave no answer of its own, only a citation; extracts from your documents:")


def localised(text: str) -> str:
    """``text`` with a leading backend label (the extractive or fallback one) in the request's language.

    Called for every streamed token: a prefix test, and a catalogue lookup only when a label is there.
    """
    for english in (LABEL, FALLBACK_LABEL):
        if text.startswith(english):
            return _translated(english) + text[len(english):]
    return text


def answer_out(answer: Answer, passages: Sequence[Passage], *, no_good_match: bool = False) -> dict[str, Any]:
    """An answer with its citations: the passages it cites, or — when it cites none — those it was given.

    A model that cited nothing still answered from the passages that fit its
    context window (``passages_used``); those are listed, and
    ``citation_mode`` says so (``context`` instead of ``marked``).
    """
    cited = cited_passages(answer, passages)
    used = passages[: answer.passages_used] if answer.passages_used else passages
    return {
        "answer": localised(answer.answer),
        "reasoning": answer.reasoning,
        "backend": answer.backend,
        # The model that wrote the answer ("extractive" for quotes, "none" when nothing was generated).
        "model": answer.model or answer.backend,
        "generated": answer.generated,
        # "length": generation stopped at the token limit, so the answer is cut short ("truncated").
        "finish_reason": answer.finish_reason,
        "truncated": answer.finish_reason == "length",
        "citation_mode": "marked" if cited else "context",
        "citations": [citation_out(p) for p in (cited or used)],
        "passages": [citation_out(p) for p in passages],
        # Passages that fit the model's context window / passages retrieved.
        "passages_used": answer.passages_used,
        "passages_offered": answer.passages_offered or len(passages),
        # The evidence check found nothing relevant, so nothing was generated or cited.
        "no_good_match": no_good_match,
        # The model replied with only a citation marker: "plain" when, asked again with the plain
        # prompt, it answered (its citation attributed afterwards); "extractive" when extracts
        # replace it (the answer's first line says so too). None for the model's own first answer.
        "fallback": answer.fallback or None,
    }


@dataclass(frozen=True)
class Refusal:
    """Why an ask was not answered, as the client is told: status, code, message, seconds to wait."""

    status: int
    code: str
    message: str
    retry_after: int | None


def ask_refusal(exc: Exception) -> Refusal | None:
    """The answer to an ask refused by admission control or failed in generation; None for other errors.

    One mapping for ``/api/v1/ask`` and ``/v1/chat/completions``: 429 (this
    user's concurrent generations) or 503 (pool full, no worker), both with
    ``Retry-After``; 504 on timeout; 400 for a prompt too long.
    """
    from inference.admission import AdmissionRefused

    if isinstance(exc, AdmissionRefused):
        from inference.metrics import registry

        registry.inc("cairn_ask_refused_total", reason=exc.reason)
        code = "too_many_requests" if exc.status == 429 else "unavailable"
        return Refusal(exc.status, code, str(exc), exc.retry_after)
    if isinstance(exc, GenerationFailed):
        return Refusal(exc.status, exc.code, exc.message, 5 if exc.status == 503 else None)
    return None


def refusal_response(exc: Exception) -> Any:
    """This API's error answer for a refused or failed ask (``ask_refusal``); None for any other error."""
    from rest_framework.response import Response

    from kb.api.errors import error_body

    refusal = ask_refusal(exc)
    if refusal is None:
        return None
    details = {"retry_after": refusal.retry_after} if refusal.status in (429, 503) else None
    headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
    return Response(error_body(refusal.code, refusal.message, details), status=refusal.status, headers=headers)
