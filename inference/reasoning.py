"""Separating DeepSeek-R1 style ``<think>…</think>`` reasoning from the answer, incrementally.

Models stream text in arbitrary pieces, so a tag can arrive split across
pieces ("<thi" + "nk>"). ``ReasoningSplitter`` holds back only the text that
could still turn out to be (part of) a tag, or — for reasoning models — the
text whose channel is not yet known, and emits everything else at once.

The rules, applied to the whole output:

* Output that starts (after whitespace) with ``<think>``: the text up to
  ``</think>`` is reasoning, the rest is the answer. If ``</think>`` never
  comes (the generation was cut off), everything after ``<think>`` is
  reasoning and the answer is empty.
* ``expect_reasoning=True`` (the chat template already put ``<think>`` in the
  prompt, as DeepSeek-R1's does, so the output holds only ``</think>``): the
  text before the first ``</think>`` is reasoning. If no ``</think>`` ever
  appears, all of it is the answer: better to show text than to hide it in a
  collapsed reasoning section. The price is that such text can only be
  released once ``</think>`` or the end of the stream is seen.
* Otherwise everything is the answer, streamed as it arrives. A stray
  ``</think>`` in it stays literal text: a model whose prompt did not open a
  think block has no reasoning to close, and holding back every answer until
  the end of the stream (to see whether one comes) would defeat streaming.
  The transformers backend sets ``expect_reasoning`` from the rendered prompt,
  so this case means a model that misbehaves, and showing its text is safest.
* Each channel is stripped of leading and trailing whitespace (the newlines
  around the tags); whitespace inside is kept. Tags after the think block
  are ordinary text.

Invariant: for any way of cutting a text into pieces, feeding the pieces and
then calling ``close()`` yields events whose per-channel concatenation equals
``split_reasoning(text)`` of the whole text.
"""

from __future__ import annotations

import enum

from inference.types import Channel, StreamEvent

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


class _State(enum.Enum):
    START = "start"  # nothing decided yet; everything is held
    THINKING = "thinking"  # inside an explicit <think> block: reasoning streams
    MAYBE_THINKING = "maybe_thinking"  # expect_reasoning, no <think> seen: held until </think> or close
    ANSWERING = "answering"  # the rest is answer, no tags interpreted


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class _ChannelWriter:
    """Strips a channel's leading and trailing whitespace while it streams.

    Trailing whitespace is held until more non-whitespace text arrives (then
    it was inner whitespace and is released) or the channel ends (dropped).
    """

    def __init__(self, channel: Channel) -> None:
        self.channel: Channel = channel
        self._started = False
        self._pending_space = ""

    def write(self, text: str) -> list[StreamEvent]:
        if not self._started:
            text = text.lstrip()
        body = text.rstrip()
        if not body:
            if self._started:
                self._pending_space += text
            return []
        trailing = text[len(body):]
        out = self._pending_space + body
        self._pending_space = trailing
        self._started = True
        return [StreamEvent(channel=self.channel, text=out)]


class ReasoningSplitter:
    """Incremental ``<think>`` parser: ``feed`` pieces, then ``close`` once.

    Invariants: events are never empty; a ``reasoning`` event never follows an
    ``answer`` event; ``feed`` after ``close`` is an error.
    """

    def __init__(self, expect_reasoning: bool = False) -> None:
        self.expect_reasoning = expect_reasoning
        self._state = _State.START
        self._held = ""
        # MAYBE_THINKING re-searches only the new tail, keeping long reasoning linear.
        self._searched_upto = 0
        self._reasoning = _ChannelWriter("reasoning")
        self._answer = _ChannelWriter("answer")
        self._closed = False

    def feed(self, text: str) -> list[StreamEvent]:
        if self._closed:
            raise RuntimeError("ReasoningSplitter.feed() after close()")
        if not text:
            return []
        if self._state is _State.ANSWERING:
            return self._answer.write(text)
        self._held += text
        return self._advance()

    def close(self) -> list[StreamEvent]:
        if self._closed:
            return []
        self._closed = True
        held, self._held = self._held, ""
        if self._state is _State.THINKING:
            # Cut off inside the think block: a partial "</thi" is still reasoning text.
            return self._reasoning.write(held)
        # START: only whitespace or a partial "<thi" — it is text, not a tag.
        # MAYBE_THINKING: no </think> ever came; show it rather than hide it.
        return self._answer.write(held)

    def _advance(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if self._state is _State.START:
            stripped = self._held.lstrip()
            if stripped.startswith(OPEN_TAG):
                self._held = stripped[len(OPEN_TAG):]
                self._state = _State.THINKING
            elif OPEN_TAG.startswith(stripped):
                return events  # empty, whitespace or a partial "<thi": undecided
            elif self.expect_reasoning:
                self._state = _State.MAYBE_THINKING
                self._searched_upto = 0
            else:
                self._state = _State.ANSWERING
                held, self._held = self._held, ""
                return self._answer.write(held)

        if self._state is _State.THINKING:
            end = self._held.find(CLOSE_TAG)
            if end < 0:
                keep = _partial_suffix(self._held, CLOSE_TAG)
                ready = self._held[: len(self._held) - keep]
                self._held = self._held[len(self._held) - keep:]
                return self._reasoning.write(ready)
            return self._finish_thinking(end)

        if self._state is _State.MAYBE_THINKING:
            end = self._held.find(CLOSE_TAG, self._searched_upto)
            if end < 0:
                self._searched_upto = max(0, len(self._held) - len(CLOSE_TAG) + 1)
                return events
            return self._finish_thinking(end)
        return events

    def _finish_thinking(self, end: int) -> list[StreamEvent]:
        reasoning = self._held[:end]
        rest = self._held[end + len(CLOSE_TAG):]
        self._held = ""
        self._state = _State.ANSWERING
        return self._reasoning.write(reasoning) + self._answer.write(rest)


def split_reasoning(text: str, expect_reasoning: bool = False) -> tuple[str, str]:
    """``(reasoning, answer)`` of a complete output, by the rules in the module docstring."""
    splitter = ReasoningSplitter(expect_reasoning=expect_reasoning)
    events = splitter.feed(text) + splitter.close()
    reasoning = "".join(e.text for e in events if e.channel == "reasoning")
    answer = "".join(e.text for e in events if e.channel == "answer")
    return reasoning, answer
