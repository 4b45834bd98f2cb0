"""A generated reply that is only a citation marker is never returned as the answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inference.api import generate
from inference.citations import is_bare_marker, strip_markers
from inference.fallback import FALLBACK_LABEL, answer_or_fallback
from inference.pool import GenerationPool
from inference.types import GenerationRequest, Passage, StreamEvent

PASSAGES = (
    Passage(
        number=1,
        chunk_id=1,
        document_id=1,
        title="Office",
        page=None,
        heading="",
        text="The office opens at nine. Parking is free for staff.",
    ),
    Passage(
        number=2,
        chunk_id=2,
        document_id=2,
        title="Handbook",
        page=None,
        heading="",
        text="Employees get twenty holiday days a year. Unused days expire in March.",
    ),
)
REQUEST = GenerationRequest(question="How many holiday days do employees get?", passages=PASSAGES)


class ScriptedGenerator:
    """A generating backend that writes a fixed reply, piece by piece, as a small model might."""

    name = "scripted"
    generated = True

    def __init__(self, *pieces: str) -> None:
        self.pieces = pieces

    def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]:
        for piece in self.pieces:
            yield StreamEvent(channel="answer", text=piece)


@pytest.mark.parametrize(
    "reply",
    [
        "[1]",
        " [2] ",
        "[1][2].",
        "【1】",
        "[^1]",
        "Answer: [1]",
        "",
        "[1, 2]",
        "[2] (p0-1.md › Normans)",
    ],
)
def test_replies_with_nothing_but_markers_are_bare(reply: str) -> None:
    assert is_bare_marker(reply)


@pytest.mark.parametrize("reply", ["Twenty days [2].", "20 [2]", "二十天 [2]", "I don't know."])
def test_replies_with_words_are_not_bare(reply: str) -> None:
    assert not is_bare_marker(reply)
    assert strip_markers("Twenty days [2].") == "Twenty days ."


def test_a_bare_marker_answer_is_replaced_by_labelled_extracts() -> None:
    answer = generate(ScriptedGenerator("[", "1", "]"), REQUEST)

    assert answer.fallback == "extractive"
    assert answer.answer.startswith(FALLBACK_LABEL) and answer.answer != "[1]"
    assert "“Employees get twenty holiday days a year.” [2]" in answer.answer
    assert answer.cited_numbers[0] == 2 and answer.generated is True


def test_a_real_answer_is_returned_unchanged() -> None:
    answer = generate(ScriptedGenerator("Twenty days", " a year [2]."), REQUEST)

    assert (
        answer.answer == "Twenty days a year [2]."
        and answer.fallback == ""
        and answer.cited_numbers == (2,)
    )


def test_quoting_backends_are_never_replaced() -> None:
    assert answer_or_fallback(REQUEST, "[1]", generated=False) == ("[1]", "")


def test_the_pool_finishes_a_bare_marker_reply_with_the_fallback() -> None:
    pool = GenerationPool(ScriptedGenerator("[1]"), max_batch=1, batching=False)
    try:
        events = list(pool.submit(REQUEST).events(timeout=10))
    finally:
        pool.close()
    done = events[-1]
    assert done["event"] == "done"
    assert done["answer"]["fallback"] == "extractive" and done["answer"]["answer"].startswith(
        FALLBACK_LABEL
    )
    assert done["answer"]["cited_numbers"][0] == 2


def test_without_passages_the_fallback_says_so() -> None:
    text, fallback = answer_or_fallback(
        GenerationRequest(question="Anything?", passages=()), "[1]", generated=True
    )
    assert fallback == "extractive" and "No passages" in text
