"""Plain-dict forms of requests and answers, for crossing a process boundary (Celery, JSON)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from inference.types import Answer, GenerationRequest, Passage, PromptStyle, finish_reason_of


def request_to_dict(request: GenerationRequest) -> dict[str, Any]:
    return asdict(request)


def request_from_dict(data: dict[str, Any]) -> GenerationRequest:
    passages = tuple(Passage(**p) for p in data.get("passages", ()))
    return GenerationRequest(
        question=str(data["question"]),
        passages=passages,
        max_new_tokens=int(data.get("max_new_tokens", 512)),
        request_id=str(data.get("request_id", "")),
        prompt=prompt_style_of(data.get("prompt")),
    )


def prompt_style_of(value: object) -> PromptStyle:
    """A wire dict's prompt style; anything unknown (an older web process sends none) means the default."""
    return "cited" if value == "cited" else "plain" if value == "plain" else ""


def answer_to_dict(answer: Answer) -> dict[str, Any]:
    return asdict(answer)


def answer_from_dict(data: Mapping[str, Any]) -> Answer:  # a ``done`` event's AnswerDict, too
    return Answer(
        answer=data["answer"],
        reasoning=data.get("reasoning", ""),
        cited_numbers=tuple(data.get("cited_numbers", ())),
        backend=data["backend"],
        generated=bool(data["generated"]),
        passages_used=int(data.get("passages_used", 0)),
        passages_offered=int(data.get("passages_offered", data.get("passages_used", 0))),
        # Absent from answers of workers older than these fields: the backend's name, stopped by itself.
        model=str(data.get("model") or data["backend"]),
        finish_reason=finish_reason_of(data.get("finish_reason")),
        fallback=str(data.get("fallback") or ""),
    )
