"""A generated reply that is only a citation marker is never returned as the answer: the model is asked again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from inference.api import generate, load_generator
from inference.citations import is_bare_marker, strip_markers
from inference.fallback import FALLBACK_LABEL, answer_or_fallback
from inference.pool import GenerationPool
from inference.prompting import INSTRUCTIONS, build_messages
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


class CitationOnlyModel:
    """Replies with only a citation marker to the cited prompt, and in words to the plain one."""

    name = "scripted"
    generated = True

    def __init__(self, plain_reply: str = "Employees get twenty days a year.") -> None:
        self.plain_reply = plain_reply
        self.requests: list[GenerationRequest] = []

    def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]:
        self.requests.append(request)
        yield StreamEvent(channel="answer", text=self.plain_reply if request.prompt == "plain" else "[1]")


def test_a_bare_marker_answer_is_asked_again_with_the_plain_prompt() -> None:
    model = CitationOnlyModel()

    answer = generate(model, REQUEST)

    assert answer.fallback == "plain" and answer.generated is True
    assert answer.answer == "Employees get twenty days a year [2]."
    assert answer.cited_numbers == (2,)
    first, again = model.requests
    assert first.prompt == "" and again.prompt == "plain" and again.passages == REQUEST.passages


def test_the_re_ask_is_one_plain_user_message_without_the_citing_instructions() -> None:
    model = CitationOnlyModel()
    generate(model, REQUEST)

    (message,) = build_messages(model.requests[1])

    assert message["role"] == "user" and INSTRUCTIONS not in message["content"]
    assert message["content"].startswith("Use the context to answer the question.")
    assert "[1]" not in message["content"] and "Employees get twenty holiday days" in message["content"]
    assert message["content"].endswith(f"Question: {REQUEST.question}\nAnswer:")


def test_when_the_re_ask_says_nothing_either_extracts_are_returned() -> None:
    model = CitationOnlyModel(plain_reply="[2]")

    answer = generate(model, REQUEST)

    assert answer.fallback == "extractive" and answer.answer.startswith(FALLBACK_LABEL)
    assert len(model.requests) == 2  # asked again once, not more


def test_an_answer_to_a_plain_prompt_gets_its_citation_attributed() -> None:
    plain = replace(REQUEST, prompt="plain")

    text, fallback = answer_or_fallback(plain, "Twenty days.", generated=True)

    assert (text, fallback) == ("Twenty days [2].", "")


def test_the_pool_re_asks_a_bare_marker_reply() -> None:
    model = CitationOnlyModel()
    pool = GenerationPool(model, max_batch=1, batching=False)
    try:
        events = list(pool.submit(REQUEST).events(timeout=10))
    finally:
        pool.close()
    done = events[-1]
    assert done["event"] == "done"
    assert done["answer"]["fallback"] == "plain"
    assert done["answer"]["answer"] == "Employees get twenty days a year [2]."
    assert done["answer"]["cited_numbers"] == [2]
    # The re-ask's pieces are not streamed after the bare reply: the done event carries the answer.
    assert [e["text"] for e in events if e["event"] == "token"] == ["[1]"]


def test_a_real_model_answers_the_re_ask(tiny_qwen2: str, fresh_generators: None) -> None:
    """The re-ask runs through a real model's tokenizer, chat template and generate (tiny, random weights)."""
    real = load_generator("transformers", tiny_qwen2)

    class BareFirst:
        name, generated = "transformers", True

        def __init__(self) -> None:
            self.plain_prompts: list[str] = []

        def pack(self, request: GenerationRequest) -> GenerationRequest:
            return real.pack(replace(request, prompt=request.prompt or "cited"))

        def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]:
            if request.prompt != "plain":
                yield StreamEvent(channel="answer", text="[1]")
                return
            self.plain_prompts.append(real.tokenizer.decode(real.encode(request)["input_ids"][0]))
            yield from real.stream(request)

    model = BareFirst()
    expected = generate(real, replace(REQUEST, prompt="plain", max_new_tokens=8)).answer

    answer = generate(model, replace(REQUEST, max_new_tokens=8))

    assert answer.fallback == "plain" and answer.answer == expected
    assert not is_bare_marker(answer.answer)
    (prompt,) = model.plain_prompts
    assert "Use the context to answer the question." in prompt and INSTRUCTIONS not in prompt


def test_the_prompt_style_crosses_the_wire_to_an_inference_worker() -> None:
    from inference.wire import request_from_dict, request_to_dict

    plain = replace(REQUEST, prompt="plain")
    assert request_from_dict(request_to_dict(plain)) == plain
    older = {k: v for k, v in request_to_dict(REQUEST).items() if k != "prompt"}  # an older web process
    assert request_from_dict(older).prompt == ""


def test_a_re_ask_that_fails_ends_in_extracts_not_an_error() -> None:
    def broken(request: GenerationRequest) -> str:
        raise RuntimeError("out of memory")

    text, fallback = answer_or_fallback(REQUEST, "[1]", generated=True, reask=broken)

    assert fallback == "extractive" and text.startswith(FALLBACK_LABEL)


def test_the_pools_re_ask_stops_when_its_request_is_past_its_deadline() -> None:
    from inference.pool import Ticket

    class Endless:
        name = "scripted"
        generated = True
        pieces = 0
        closed = False

        def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]:
            try:
                while True:
                    Endless.pieces += 1
                    yield StreamEvent(channel="answer", text=" more")
            finally:
                Endless.closed = True

    pool = GenerationPool(Endless(), max_batch=1, batching=False)
    try:
        expired = Ticket(REQUEST, deadline=time.monotonic() - 1)
        assert pool._reask(replace(REQUEST, prompt="plain"), expired) == ""
    finally:
        pool.close()
    assert Endless.pieces == 1 and Endless.closed  # stopped at once, and the model's stream was closed
