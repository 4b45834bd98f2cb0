"""The <think> splitter: whole-text rules and chunk-independence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.reasoning import ReasoningSplitter, split_reasoning
from inference.types import StreamEvent


def run_pieces(
    pieces: list[str], expect_reasoning: bool
) -> tuple[list[StreamEvent], tuple[str, str]]:
    splitter = ReasoningSplitter(expect_reasoning=expect_reasoning)
    events: list[StreamEvent] = []
    for piece in pieces:
        events.extend(splitter.feed(piece))
    events.extend(splitter.close())
    reasoning = "".join(e.text for e in events if e.channel == "reasoning")
    answer = "".join(e.text for e in events if e.channel == "answer")
    return events, (reasoning, answer)


@pytest.mark.parametrize("expect", [False, True])
@pytest.mark.parametrize(
    ("text", "reasoning", "answer"),
    [
        ("<think>R</think>A", "R", "A"),
        ("<think>\nLet me look.\n</think>\n\nTwenty days [1].", "Let me look.", "Twenty days [1]."),
        ("  \n<think>R</think>A", "R", "A"),
        ("<think></think>A", "", "A"),
        ("<think>cut off mid-thou", "cut off mid-thou", ""),
        ("<think>cut off in the tag </thi", "cut off in the tag </thi", ""),
        ("<think>R</think>A <think>x</think>", "R", "A <think>x</think>"),
        ("", "", ""),
        ("<thi", "", "<thi"),
    ],
)
def test_explicit_think_block(text: str, reasoning: str, answer: str, expect: bool) -> None:
    assert split_reasoning(text, expect_reasoning=expect) == (reasoning, answer)


def test_no_tags_is_all_answer() -> None:
    assert split_reasoning("  Twenty days [1].\n") == ("", "Twenty days [1].")


def test_missing_opening_tag_with_reasoning_model() -> None:
    # DeepSeek-R1 templates end the prompt with "<think>\n": the output holds only the closing tag.
    text = "The handbook says twenty.\n</think>\n\nEmployees get twenty days [1]."
    assert split_reasoning(text, expect_reasoning=True) == (
        "The handbook says twenty.",
        "Employees get twenty days [1].",
    )


def test_reasoning_model_without_any_tag_shows_everything_as_answer() -> None:
    assert split_reasoning("No thinking here.", expect_reasoning=True) == ("", "No thinking here.")


def test_stray_closing_tag_without_reasoning_model_stays_text() -> None:
    assert split_reasoning("A </think> B") == ("", "A </think> B")


def test_tags_split_across_chunks() -> None:
    events, parsed = run_pieces(["<thi", "nk>Rea", "soning</th", "ink>", "\n\nAns", "wer"], False)
    assert parsed == ("Reasoning", "Answer")
    channels = [e.channel for e in events]
    assert channels == sorted(channels, key=lambda c: c == "answer")


def test_reasoning_and_answer_stream_before_close() -> None:
    splitter = ReasoningSplitter()
    assert splitter.feed("<think>first ") == [StreamEvent("reasoning", "first")]
    assert splitter.feed("thought</think> The ") == [
        StreamEvent("reasoning", " thought"),
        StreamEvent("answer", "The"),
    ]
    assert splitter.feed("answer ") == [StreamEvent("answer", " answer")]
    assert splitter.close() == []


def test_reasoning_model_holds_until_closing_tag() -> None:
    splitter = ReasoningSplitter(expect_reasoning=True)
    assert splitter.feed("thinking ") == []
    assert splitter.feed("more</think>Answer") == [
        StreamEvent("reasoning", "thinking more"),
        StreamEvent("answer", "Answer"),
    ]


def test_feed_after_close_is_an_error() -> None:
    splitter = ReasoningSplitter()
    splitter.close()
    with pytest.raises(RuntimeError):
        splitter.feed("x")


_fragments = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<thi",
        "nk>",
        "</",
        "<",
        ">",
        "think",
        "a",
        "b c",
        " ",
        "\n",
        "\n\n",
        "é",
        "[1]",
    ]
)
_texts = st.one_of(st.lists(_fragments, max_size=14).map("".join), st.text(max_size=40))


@settings(max_examples=400, deadline=None)
@given(text=_texts, data=st.data(), expect=st.booleans())
def test_any_chunking_equals_whole_parse(text: str, data: st.DataObject, expect: bool) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    events, parsed = run_pieces(pieces, expect)
    assert parsed == split_reasoning(text, expect_reasoning=expect)
    assert all(e.text for e in events)
    channels = [e.channel for e in events]
    assert "reasoning" not in channels[channels.index("answer") :] if "answer" in channels else True


@settings(max_examples=200, deadline=None)
@given(reasoning=st.text(max_size=30), answer=st.text(max_size=30), expect=st.booleans())
def test_well_formed_output_round_trips(reasoning: str, answer: str, expect: bool) -> None:
    # Any text without tags, wrapped as a model writes it, comes back stripped.
    reasoning = reasoning.replace("</think>", "").replace("<think>", "")
    text = f"<think>\n{reasoning}\n</think>\n\n{answer}"
    assert split_reasoning(text, expect_reasoning=expect) == (reasoning.strip(), answer.strip())


def test_vllm_style_output_without_opening_tag_streams_in_pieces() -> None:
    # vLLM serving R1 without a reasoning parser: the prompt opened <think>, the
    # output carries only "</think>", here split across pieces.
    pieces = ["Let me check passage 1.", "\nIt says twenty.</th", "ink>", "\n\nTwenty", " days [1]."]
    events, parsed = run_pieces(pieces, expect_reasoning=True)
    assert parsed == ("Let me check passage 1.\nIt says twenty.", "Twenty days [1].")
    assert [e.channel for e in events][0] == "reasoning" and events[-1].channel == "answer"
    assert all("think>" not in e.text for e in events)


def test_unclosed_opening_tag_is_all_reasoning_and_no_answer() -> None:
    # Cut off (max_new_tokens) inside the think block: nothing leaks into the answer.
    _, parsed = run_pieces(["<think>\nStill weighing", " passage 2 against"], expect_reasoning=False)
    assert parsed == ("Still weighing passage 2 against", "")
