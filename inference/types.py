"""Plain data passed into and out of the inference package.

These are the only shapes other Cairn apps exchange with ``inference``; they
are frozen dataclasses of builtins so that they cross process boundaries
(Celery, JSON via ``inference.wire``) unchanged and never drag Django along.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Literal, TypeAlias, cast

Channel = Literal["reasoning", "answer"]
# How a request is put to the model (``inference.prompting``): "cited" — the instructions, numbered passages,
# markers asked for; "plain" — the passages as unnumbered context and the question, citations attributed
# afterwards (``inference.attribution``); "" — the backend's default for its model.
PromptStyle = Literal["", "cited", "plain"]
# Why generation ended: the model stopped by itself, or it reached ``max_new_tokens`` (the answer is cut).
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Passage:
    """One retrieved chunk as shown to the model.

    Invariant: within a request, ``number`` is 1-based and unique; it is the
    ``[n]`` marker the model is asked to cite.
    """

    number: int
    chunk_id: int
    document_id: int
    title: str
    page: int | None
    heading: str
    text: str


@dataclass(frozen=True)
class GenerationRequest:
    question: str
    passages: tuple[Passage, ...]
    max_new_tokens: int = 512
    request_id: str = ""
    prompt: PromptStyle = ""


@dataclass(frozen=True)
class StreamEvent:
    """An incremental, never empty piece of one channel.

    Joining the ``text`` of all events of a channel, in order, gives that
    channel's full text (reasoning already separated from the answer).
    """

    channel: Channel
    text: str


@dataclass(frozen=True)
class Answer:
    """A finished answer.

    Invariants: ``answer`` has no ``<think>`` reasoning in it; every number in
    ``cited_numbers`` is in ``1..passages_used``, appears once, in order of
    first citation; ``generated`` is False only for backends that quote;
    ``passages_used <= passages_offered``.
    """

    answer: str
    reasoning: str
    cited_numbers: tuple[int, ...]
    backend: str
    generated: bool
    passages_used: int
    # Passages retrieved for the question; more than ``passages_used`` when
    # the rest did not fit the model's context window (packing drops whole
    # passages from the end, never a part of one).
    passages_offered: int = 0
    # The model that wrote it (a model directory's name, a served model's name; the backend's name
    # for backends without one, e.g. "extractive"), and why it stopped ("length": cut at the limit).
    model: str = ""
    finish_reason: FinishReason = "stop"
    # When the model's reply said nothing but a citation marker (``inference.fallback``): "plain" when
    # the model, asked again with the plain prompt, answered (citations attributed afterwards),
    # "extractive" when extracts were returned instead; "" for the model's own first answer.
    fallback: str = ""


# What a backend's ``stream`` is: events, then (as the generator's return value) why it ended.
StreamEvents: TypeAlias = Generator[StreamEvent, None, FinishReason | None]


def finish_reason_of(value: object) -> FinishReason:
    """A backend stream's return value (or a wire dict's field) as a ``FinishReason``: "length" or "stop"."""
    return "length" if value == "length" else "stop"


class Finished:
    """Iterates a backend's ``stream`` and keeps what it returned: its ``FinishReason`` (``reason``).

    A backend's ``stream`` is a generator that ``return``s "length" when it stopped at
    ``max_new_tokens`` (anything else, or nothing, means it stopped by itself).
    """

    def __init__(self, events: Iterator[StreamEvent]) -> None:
        self.events = events
        self.reason: FinishReason = "stop"

    def __iter__(self) -> Iterator[StreamEvent]:
        self.reason = finish_reason_of((yield from cast(StreamEvents, self.events)))

    def close(self) -> None:
        close = getattr(self.events, "close", None)
        if close is not None:
            close()


# How kb.followup joins a follow-up question to the earlier turns it leans on: "QUESTION (context: EARLIER)".
# Backends that weigh the question's words (the extractive one) count the context's words less.
FOLLOW_UP_CONTEXT = " (context: "


def question_and_context(question: str) -> tuple[str, str]:
    """A (possibly rewritten) question split into the question proper and the earlier turns' context."""
    if question.endswith(")") and FOLLOW_UP_CONTEXT in question:
        head, _, tail = question.partition(FOLLOW_UP_CONTEXT)
        return head, tail[:-1]
    return question, ""

