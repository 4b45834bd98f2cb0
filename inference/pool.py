"""The generation pool: one resident model, a bounded queue, a scheduler thread, streamed events.

A ``GenerationPool`` owns one loaded ``Generator`` for the life of its
process. ``submit`` puts a request in a bounded queue and returns a
``Ticket`` at once; the ticket receives the request's events as plain dicts
(the same shape that crosses Redis in the team shape):

* ``{"event": "reasoning", "text"}`` / ``{"event": "token", "text"}`` — pieces,
  reasoning (DeepSeek-R1 ``<think>``) already separated from the answer;
* ``{"event": "done", "answer": {...}, "metrics": {...}}`` — last event on success;
* ``{"event": "error", "code", "message"}`` — last event otherwise
  (``cancelled``, ``timeout``, ``pool_full``, ``prompt_too_long``, ``internal``).

How requests are run depends on the backend:

* ``transformers`` — **dynamic batching** in one scheduler thread
  (``_BatchRunner``): waiting requests are collected (up to ``max_batch``,
  waiting at most ``max_wait`` seconds for company when the GPU is idle),
  left-padded and prefilled together, then decoded step by step with a shared
  KV cache, greedy (or temperature/top-p when the generator samples). Each row finishes at its own EOS / token limit /
  cancellation / deadline and is pruned from the batch at once; requests that
  arrive while a batch runs are prefilled and *joined* into it at the next
  step (the caches are left-padded to a common length), so a finished or
  cancelled request frees its slot for the next one immediately.
* any other backend (extractive, a remote OpenAI-compatible server, vLLM's
  own engine) — ``max_batch`` threads each run ``generator.stream``; the
  remote server or engine does its own batching.

Invariants: every ticket gets exactly one final event (``done`` or
``error``); a request's output equals what one-at-a-time greedy generation
(``inference.api.generate``) gives, up to floating-point ties; the pool
never holds more than ``max_queue`` requests (waiting + running).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, NotRequired, Protocol, TypedDict, TypeGuard, cast

from inference.backends import Generator
from inference.citations import cited_numbers, normalize_markers
from inference.fallback import Reask, answer_or_fallback, answer_text
from inference.metrics import Registry
from inference.metrics import registry as default_registry
from inference.reasoning import ReasoningSplitter
from inference.types import Finished, FinishReason, GenerationRequest, StreamEvent

if TYPE_CHECKING:  # heavy: imported for real only when a batching pool starts (``_BatchRunner``)
    import torch
    from transformers import (
        Cache,
        DynamicCache,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        TextStreamer,
    )

logger = logging.getLogger(__name__)

FINAL_EVENTS = ("done", "error")

ErrorCode = Literal["cancelled", "timeout", "pool_full", "prompt_too_long", "internal", "worker_lost"]


class GenerationMetrics(TypedDict):
    """One request's numbers, attached to its final event by the pool."""

    queue_wait_s: float
    time_to_first_token_s: float
    tokens: int
    tokens_per_s: float
    batch_size: int
    total_s: float
    gpu_memory_allocated_bytes: NotRequired[int]  # only when torch has CUDA


class AnswerDict(TypedDict):
    """The ``done`` event's answer: ``inference.types.Answer`` as ``inference.wire`` dicts it."""

    answer: str
    reasoning: str
    cited_numbers: list[int]
    backend: str
    generated: bool
    passages_used: int
    passages_offered: int
    model: str
    finish_reason: FinishReason
    fallback: str  # "plain" / "extractive" when a bare-marker reply was replaced (``inference.fallback``)


class TextEvent(TypedDict):
    """A piece of the reasoning, or of the answer (``token``)."""

    event: Literal["reasoning", "token"]
    text: str


class DoneEvent(TypedDict):
    event: Literal["done"]
    answer: AnswerDict
    metrics: NotRequired[GenerationMetrics]  # added by the pool as it finishes the request


class ErrorEvent(TypedDict):
    event: Literal["error"]
    code: ErrorCode
    message: str
    # Absent when no request ran (refused before a ticket existed, or a ticket that went silent).
    metrics: NotRequired[GenerationMetrics]


FinalEvent = DoneEvent | ErrorEvent
PoolEvent = TextEvent | DoneEvent | ErrorEvent
"""Every event a ticket (or its Redis stream) carries; see the module docstring."""


def is_final(event: PoolEvent) -> TypeGuard[FinalEvent]:
    return event["event"] in FINAL_EVENTS


class PoolFull(Exception):
    """The pool's bounded queue is full; the caller should answer 503 and try later."""


class Ticket:
    """One submitted request: its events so far, and a cancel flag checked between decode steps."""

    def __init__(self, request: GenerationRequest, deadline: float | None) -> None:
        self.request = request
        self.request_id = request.request_id or uuid.uuid4().hex
        self.submitted_at = time.monotonic()
        self.deadline = deadline
        self._cancelled = threading.Event()
        self._events: list[PoolEvent] = []
        self._cond = threading.Condition()
        self._waker: Callable[[], None] | None = None
        self.finished = False

    # --- producer side (the pool) ---
    def push(self, event: PoolEvent) -> None:
        with self._cond:
            if self.finished:
                return
            self._events.append(event)
            if is_final(event):
                self.finished = True
            self._cond.notify_all()
            waker = self._waker
        if waker is not None:
            waker()

    # --- consumer side ---
    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def set_waker(self, waker: Callable[[], None]) -> None:
        """``waker()`` is called (from the pool's thread) after each new event; for asyncio readers."""
        with self._cond:
            self._waker = waker

    def events_since(self, index: int, timeout: float | None = 0.0) -> list[PoolEvent]:
        """Events from position ``index`` on, waiting up to ``timeout`` seconds for at least one."""
        with self._cond:
            if len(self._events) <= index and timeout:
                self._cond.wait_for(lambda: len(self._events) > index, timeout)
            return self._events[index:]

    def events(self, timeout: float | None = None) -> Iterator[PoolEvent]:
        """Every event up to and including the final one; ``timeout`` bounds the silence between two."""
        index = 0
        while True:
            batch = self.events_since(index, timeout if timeout is not None else 3600.0)
            if not batch:
                self.cancel()
                yield {"event": "error", "code": "timeout", "message": "The generation did not answer in time."}
                return
            index += len(batch)
            for event in batch:
                yield event
                if is_final(event):
                    return


class _Output:
    """Turns one request's tokens into reasoning/answer events and assembles its final answer."""

    def __init__(self, ticket: Ticket, expect_reasoning: bool) -> None:
        self.ticket = ticket
        self.splitter = ReasoningSplitter(expect_reasoning=expect_reasoning)
        self.reasoning: list[str] = []
        self.answer: list[str] = []
        self.first_at: float | None = None
        self.started_at = time.monotonic()
        self.tokens = 0
        self.batch_size = 0

    def text(self, piece: str) -> None:
        if piece:
            self._emit(self.splitter.feed(piece))

    def _emit(self, events: list[StreamEvent]) -> None:
        for event in events:
            if self.first_at is None:
                self.first_at = time.monotonic()
            (self.reasoning if event.channel == "reasoning" else self.answer).append(event.text)
            name: Literal["reasoning", "token"] = "reasoning" if event.channel == "reasoning" else "token"
            self.ticket.push({"event": name, "text": event.text})

    def close(self) -> None:
        self._emit(self.splitter.close())

    def metrics(self) -> GenerationMetrics:
        now = time.monotonic()
        submitted = self.ticket.submitted_at
        run = max(now - self.started_at, 1e-9)
        metrics: GenerationMetrics = {
            "queue_wait_s": round(self.started_at - submitted, 6),
            "time_to_first_token_s": round((self.first_at or now) - submitted, 6),
            "tokens": self.tokens,
            "tokens_per_s": round(self.tokens / run, 3),
            "batch_size": self.batch_size,
            "total_s": round(now - submitted, 6),
        }
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            metrics["gpu_memory_allocated_bytes"] = int(torch.cuda.memory_allocated())
        return metrics


def answer_dict(
    *, name: str, generated: bool, request: GenerationRequest, offered: int, reasoning: str, answer: str,
    model: str = "", finish_reason: FinishReason = "stop", reask: Reask | None = None,
) -> AnswerDict:
    """The finished answer as ``inference.wire`` dicts it, by the rules of ``inference.api.generate``."""
    numbers = {p.number for p in request.passages}
    highest = max(numbers, default=0)
    text, fallback = answer_or_fallback(
        request, normalize_markers(answer.strip(), highest), generated=generated, reask=reask
    )
    return {
        "answer": text,
        "reasoning": reasoning.strip(),
        "cited_numbers": [n for n in cited_numbers(text, highest) if n in numbers],
        "backend": name,
        "generated": generated,
        "passages_used": len(request.passages),
        "passages_offered": offered,
        "model": model or name,
        "finish_reason": finish_reason,
        "fallback": fallback,
    }


def _pack(generator: Generator, request: GenerationRequest) -> GenerationRequest:
    packer = getattr(generator, "pack", None)
    return packer(request) if packer is not None else request


def _prompt_error(exc: Exception) -> ErrorEvent:
    code: ErrorCode = "prompt_too_long" if type(exc).__name__ == "PromptTooLong" else "internal"
    return {"event": "error", "code": code, "message": str(exc) if code != "internal" else
            "The generation failed; the worker's log has the details."}


class GenerationPool:
    """See the module docstring. ``timeout``: seconds a request may take from submission (None: no limit)."""

    def __init__(
        self,
        generator: Generator,
        *,
        max_batch: int = 8,
        max_wait: float = 0.01,
        max_queue: int = 64,
        timeout: float | None = None,
        metrics: Registry | None = None,
        batching: bool | None = None,
    ) -> None:
        self.generator = generator
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait)
        self.max_queue = max(1, max_queue)
        self.timeout = timeout
        self.metrics = metrics or default_registry
        self.batch_sizes: Counter[int] = Counter()  # rows per forward pass → passes; what actually ran
        self._waiting: deque[Ticket] = deque()
        self._running = 0
        self._cond = threading.Condition()
        self._closed = False
        if batching is None:
            batching = getattr(generator, "name", "") == "transformers" and hasattr(generator, "model")
        self.batching = batching
        self._threads: list[threading.Thread] = []
        targets = [_BatchRunner(self).run] if batching else [self._stream_loop] * self.max_batch
        for index, target in enumerate(targets):
            thread = threading.Thread(target=target, name=f"cairn-generation-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.metrics.inc("cairn_generation_pools", 1, backend=getattr(generator, "name", "?"))
        self._publish_gauges()

    # --- public ---
    def submit(self, request: GenerationRequest) -> Ticket:
        """Queue ``request``; raises ``PoolFull`` when ``max_queue`` requests are already in the pool."""
        deadline = time.monotonic() + self.timeout if self.timeout else None
        ticket = Ticket(request, deadline)
        with self._cond:
            if self._closed:
                raise PoolFull("The generation pool is shutting down.")
            if len(self._waiting) + self._running >= self.max_queue:
                raise PoolFull(f"The generation pool is full ({self.max_queue} requests in flight).")
            self._waiting.append(ticket)
            self._cond.notify_all()
        self._publish_gauges()
        return ticket

    def depth(self) -> tuple[int, int]:
        """``(waiting, running)``."""
        with self._cond:
            return len(self._waiting), self._running

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)

    # --- shared by the runners ---
    def _take(self, limit: int, *, block: bool) -> list[Ticket]:
        """Up to ``limit`` waiting tickets; when ``block``, wait for one, then ``max_wait`` for company."""
        with self._cond:
            if block:
                while not self._waiting and not self._closed:
                    self._cond.wait(0.5)
                if self._closed:
                    return []
                end = time.monotonic() + self.max_wait
                while len(self._waiting) < limit and not self._closed:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            taken: list[Ticket] = []
            while self._waiting and len(taken) < limit:
                taken.append(self._waiting.popleft())
            self._running += len(taken)
        if taken:  # polled between decode steps: nothing taken, nothing changed
            self._publish_gauges()
        return taken

    def _purge_cancelled(self) -> None:
        """Finish waiting requests that were cancelled or ran out of time, so they leave the queue at once."""
        with self._cond:
            gone = [(t, stop) for t in self._waiting if (stop := self._stop_reason(t)) is not None]
            for ticket, _ in gone:
                self._waiting.remove(ticket)
        for ticket, stop in gone:
            self._finish(_Output(ticket, expect_reasoning=False), stop)
        if gone:
            self._publish_gauges()

    def _release(self, count: int = 1) -> None:
        with self._cond:
            self._running -= count
        self._publish_gauges()

    def _publish_gauges(self) -> None:
        waiting, running = len(self._waiting), self._running
        self.metrics.set("cairn_generation_queue_depth", waiting)
        self.metrics.set("cairn_generation_running", running)

    def _record_forward(self, rows: int) -> None:
        self.batch_sizes[rows] += 1
        self.metrics.observe("cairn_generation_batch_size", rows)

    def _finish(self, output: _Output, event: FinalEvent) -> None:
        """Push the final event of a request and record its metrics."""
        metrics = output.metrics()
        outcome = "ok" if event["event"] == "done" else event.get("code", "error")
        m = self.metrics
        m.inc("cairn_generation_requests_total", outcome=outcome)
        m.inc("cairn_generation_tokens_total", output.tokens)
        m.observe("cairn_generation_queue_wait_seconds", metrics["queue_wait_s"])
        if output.tokens:
            m.observe("cairn_generation_time_to_first_token_seconds", metrics["time_to_first_token_s"])
            m.observe("cairn_generation_tokens_per_second", metrics["tokens_per_s"])
        m.observe("cairn_generation_request_batch_size", max(1, output.batch_size))
        event["metrics"] = metrics
        output.ticket.push(event)

    def _done_event(self, output: _Output, request: GenerationRequest, offered: int,
                    finish_reason: FinishReason = "stop") -> DoneEvent:
        output.close()
        name = getattr(self.generator, "name", "?")
        answer = answer_dict(
            name=name, generated=bool(getattr(self.generator, "generated", True)),
            request=request, offered=offered, reasoning="".join(output.reasoning), answer="".join(output.answer),
            model=str(getattr(self.generator, "model_name", "") or name), finish_reason=finish_reason,
            reask=lambda plain: self._reask(plain, output.ticket),
        )
        return {"event": "done", "answer": answer}

    def _reask(self, request: GenerationRequest, ticket: Ticket) -> str:
        """The re-ask of ``inference.fallback``, run in the calling runner's thread until it ends or ``ticket``
        is cancelled or past its deadline (then what it said so far — a bare marker or nothing means extracts).

        Rare (only after a bare-marker reply to the cited prompt; small models get the plain prompt in the
        first place) and short, so it is not queued: in a batching pool the other rows wait for it, as they
        would for a long prefill. Its pieces are not streamed; the ``done`` event carries the answer.
        """
        events = self.generator.stream(_pack(self.generator, request))

        def until_stopped() -> Iterator[StreamEvent]:
            try:
                for event in events:
                    if self._stop_reason(ticket) is not None:
                        return
                    yield event
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()

        return answer_text(until_stopped())

    @staticmethod
    def _stop_reason(ticket: Ticket) -> ErrorEvent | None:
        if ticket.cancelled:
            return {"event": "error", "code": "cancelled", "message": "The request was cancelled."}
        if ticket.deadline is not None and time.monotonic() > ticket.deadline:
            return {"event": "error", "code": "timeout", "message": "The generation took longer than its time limit."}
        return None

    # --- non-batching backends ---
    def _stream_loop(self) -> None:
        while True:
            taken = self._take(1, block=True)
            if not taken:
                return
            ticket = taken[0]
            output = _Output(ticket, expect_reasoning=False)
            output.batch_size = 1
            try:
                self._stream_one(ticket, output)
            except Exception as exc:
                logger.exception("generation %s failed", ticket.request_id)
                self._finish(output, _prompt_error(exc))
            finally:
                self._release()

    def _stream_one(self, ticket: Ticket, output: _Output) -> None:
        stop = self._stop_reason(ticket)
        if stop:
            self._finish(output, stop)
            return
        offered = len(ticket.request.passages)
        request = _pack(self.generator, ticket.request)
        output.started_at = time.monotonic()
        events = self.generator.stream(request)
        finished = Finished(events)
        try:
            for event in finished:
                output.tokens += 1
                # The backend already split reasoning from the answer: pass its pieces through.
                if output.first_at is None:
                    output.first_at = time.monotonic()
                (output.reasoning if event.channel == "reasoning" else output.answer).append(event.text)
                ticket.push({"event": "reasoning" if event.channel == "reasoning" else "token", "text": event.text})
                stop = self._stop_reason(ticket)
                if stop:
                    self._finish(output, stop)
                    return
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        self._finish(output, self._done_event(output, request, offered, finished.reason))


class _Row:
    """One request inside the running batch."""

    def __init__(self, ticket: Ticket, output: _Output, request: GenerationRequest, offered: int,
                 streamer: TextStreamer) -> None:
        self.ticket = ticket
        self.output = output
        self.request = request
        self.offered = offered
        self.streamer = streamer
        self.limit = max(1, request.max_new_tokens)


class BatchingGenerator(Generator, Protocol):
    """What the batching runner needs beyond ``Generator``: the transformers backend's model and tokenizer.

    Optional knobs (``expect_reasoning``, ``do_sample``, ``temperature``,
    ``top_p``) are read with defaults, so they are not part of the protocol.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device

    def encode(self, request: GenerationRequest) -> Mapping[str, torch.Tensor]: ...


class _KVLayer(Protocol):
    """A cache layer after prefill: its key and value tensors are set ([rows, heads, positions, dim])."""

    keys: torch.Tensor
    values: torch.Tensor


def _kv_layers(cache: Cache) -> list[_KVLayer]:
    # Only for caches ``_BatchRunner._joinable`` accepted: every layer a DynamicLayer the prefill filled,
    # whereas transformers types a layer's tensors as optional and its layers as any layer kind.
    return cast("list[_KVLayer]", cache.layers)


class _BatchRunner:
    """The scheduler thread of a transformers pool: prefill, join, decode, prune. See the module docstring."""

    # torch is imported inside the methods: this module must not import it unless a batching pool runs.

    def __init__(self, pool: GenerationPool) -> None:
        self.pool = pool
        # GenerationPool batches only generators that hold a model (the transformers backend).
        self.generator = cast(BatchingGenerator, pool.generator)
        self.model = self.generator.model
        self.tokenizer = self.generator.tokenizer
        config = self.model.generation_config
        eos = config.eos_token_id if config.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list | tuple) else [eos] if eos is not None else [])
        pad = config.pad_token_id if config.pad_token_id is not None else self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else next(iter(self.eos_ids), 0))
        self.device = self.generator.device
        self.rows: list[_Row] = []
        # The running batch's state; all three are set exactly while ``rows`` is not empty.
        self.cache: Cache | None = None
        self.mask: torch.Tensor | None = None  # [rows, positions] 1 for real tokens, 0 for left padding
        self.next_tokens: torch.Tensor | None = None  # [rows] tokens to feed at the next decode step
        self.can_join = True
        self.admitting: list[_Row] = []

    def run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                free = self.pool.max_batch - len(self.rows)
                taken = self.pool._take(free, block=not self.rows) if free > 0 else []
                if not taken and not self.rows and self.pool._closed:
                    return
                if taken and self.rows and not self.can_join:
                    # This cache cannot be merged (sliding-window layers): put them back, finish the batch first.
                    with self.pool._cond:
                        self.pool._waiting.extendleft(reversed(taken))
                        self.pool._running -= len(taken)
                    taken = []
                self.pool._purge_cancelled()
                try:
                    if taken:
                        self._admit(taken)
                    if self.rows:
                        self._decode_step()
                except Exception as exc:
                    failed = self.rows + self.admitting
                    logger.exception("batched generation failed; failing the %d requests of the batch", len(failed))
                    for row in failed:
                        self.pool._finish(row.output, _prompt_error(exc))
                    self.pool._release(len(failed))
                    self.rows, self.cache, self.mask, self.next_tokens = [], None, None, None
                    self.admitting = []

    # --- prefill and join ---
    def _admit(self, tickets: list[Ticket]) -> None:
        import torch

        pool = self.pool
        new_rows: list[_Row] = []
        prompts: list[torch.Tensor] = []
        for ticket in tickets:
            output = _Output(ticket, expect_reasoning=bool(getattr(self.generator, "expect_reasoning", False)))
            stop = pool._stop_reason(ticket)
            if stop is None:
                try:
                    offered = len(ticket.request.passages)
                    request = _pack(self.generator, ticket.request)
                    ids = self.generator.encode(request)["input_ids"][0]
                except Exception as exc:
                    logger.info("request %s refused at prefill: %s", ticket.request_id, exc)
                    stop = _prompt_error(exc)
            if stop is not None:
                pool._finish(output, stop)
                pool._release()
                continue
            streamer = _RowStreamer(self.tokenizer, output)
            row = _Row(ticket, output, request, offered, streamer)
            new_rows.append(row)
            prompts.append(ids)
        if not new_rows:
            return
        self.admitting = new_rows  # failed together with the batch if the prefill raises
        width = max(int(p.shape[0]) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long, device=self.device)
        mask = torch.zeros((len(prompts), width), dtype=torch.long, device=self.device)
        for i, ids in enumerate(prompts):
            input_ids[i, width - ids.shape[0]:] = ids.to(self.device)
            mask[i, width - ids.shape[0]:] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = self._new_cache()
        now = time.monotonic()
        for row in new_rows:
            row.output.started_at = now
        pool._record_forward(len(new_rows))
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        first = self._choose(out.logits[:, -1, :])
        cache = out.past_key_values
        if self.rows:
            self._merge(cache, mask, first, new_rows)
        else:
            self.rows, self.cache, self.mask, self.next_tokens = new_rows, cache, mask, first
            self.can_join = self._joinable(cache)
        self.admitting = []
        self._accept(first_rows=new_rows)

    def _new_cache(self) -> DynamicCache:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # older transformers
            return DynamicCache()

    def _joinable(self, cache: Cache) -> bool:
        try:
            from transformers.cache_utils import DynamicLayer
        except ImportError:
            return False
        layers: list[object] | None = getattr(cache, "layers", None)  # older caches keep per-layer lists instead
        if not layers:
            return False
        return all(type(layer) is DynamicLayer for layer in layers)

    def _merge(self, cache: Cache, mask: torch.Tensor, first: torch.Tensor, new_rows: list[_Row]) -> None:
        """Append prefilled rows to the running batch, left-padding the shorter cache."""
        import torch

        assert self.cache is not None and self.mask is not None and self.next_tokens is not None  # a batch is running
        old_len, new_len = self.mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)

        def pad(t: torch.Tensor, extra: int) -> torch.Tensor:
            if extra == 0:
                return t
            shape = list(t.shape)
            shape[-2] = extra
            return torch.cat([t.new_zeros(shape), t], dim=-2)

        for old, new in zip(_kv_layers(self.cache), _kv_layers(cache), strict=True):
            old.keys = torch.cat([pad(old.keys, width - old_len), pad(new.keys, width - new_len)], dim=0)
            old.values = torch.cat([pad(old.values, width - old_len), pad(new.values, width - new_len)], dim=0)
        zeros = self.mask.new_zeros
        self.mask = torch.cat([
            torch.cat([zeros((self.mask.shape[0], width - old_len)), self.mask], dim=1),
            torch.cat([zeros((mask.shape[0], width - new_len)), mask], dim=1),
        ], dim=0)
        self.next_tokens = torch.cat([self.next_tokens, first], dim=0)
        self.rows = self.rows + new_rows

    # --- decode ---
    def _decode_step(self) -> None:
        import torch

        assert self.cache is not None and self.mask is not None and self.next_tokens is not None  # a batch is running
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        # Each row's next position is the count of its real tokens so far, worked out on the device:
        # a tensor built from Python ints would be a host-to-device copy that waits, every step.
        positions = self.mask.sum(dim=-1, keepdim=True) - 1
        self.pool._record_forward(len(self.rows))
        out = self.model(input_ids=self.next_tokens.unsqueeze(-1), attention_mask=self.mask, position_ids=positions,
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        self.next_tokens = self._choose(out.logits[:, -1, :])
        self._accept(first_rows=None)

    def _choose(self, logits: torch.Tensor) -> torch.Tensor:
        """Greedy (the default, reproducible); with the generator's ``do_sample``, temperature + top-p."""
        import torch

        if not getattr(self.generator, "do_sample", False):
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / max(float(getattr(self.generator, "temperature", 1.0)), 1e-5), -1)
        top_p = float(getattr(self.generator, "top_p", 1.0))
        if top_p < 1.0:
            sorted_probs, order = probs.sort(-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keeps at least the most likely token
            sorted_probs[outside] = 0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        return torch.multinomial(probs, 1).squeeze(-1)

    def _accept(self, first_rows: list[_Row] | None) -> None:
        """Hand each row its new token (``self.next_tokens``), finish rows that are done, prune them."""
        import torch

        assert self.next_tokens is not None  # set by the prefill or decode step that calls this
        tokens = self.next_tokens.tolist()
        size = len(self.rows)
        keep: list[int] = []
        for index, (row, token) in enumerate(zip(self.rows, tokens, strict=True)):
            if first_rows is not None and row not in first_rows:
                keep.append(index)  # a joining prefill step: running rows got no new token
                continue
            output = row.output
            output.batch_size = max(output.batch_size, size)
            output.tokens += 1
            row.streamer.put(torch.tensor([token]))
            stop: FinalEvent | None = self.pool._stop_reason(row.ticket)
            if stop is None and (token in self.eos_ids or output.tokens >= row.limit):
                row.streamer.end()
                # Cut at the limit only when the last token was not the end of the answer anyway.
                reason: FinishReason = "stop" if token in self.eos_ids else "length"
                stop = self.pool._done_event(output, row.request, row.offered, reason)
            if stop is not None:
                self.pool._finish(output, stop)
                self.pool._release()
            else:
                keep.append(index)
        if len(keep) == size:
            return
        self._prune(keep)

    def _prune(self, keep: list[int]) -> None:
        import torch

        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache, self.mask, self.next_tokens = None, None, None
            return
        assert self.cache is not None and self.mask is not None and self.next_tokens is not None  # a batch is running
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.next_tokens = self.next_tokens[index]
        if self.can_join:
            # Drop the columns that are padding for every remaining row.
            first = int(self.mask.any(dim=0).nonzero()[0])
            if first > 0:
                self.mask = self.mask[:, first:]
                for layer in _kv_layers(self.cache):
                    layer.keys = layer.keys[..., first:, :]
                    layer.values = layer.values[..., first:, :]


_StreamerFactory = Callable[["PreTrainedTokenizerBase", _Output], "TextStreamer"]


def _row_streamer_class() -> _StreamerFactory:
    from transformers import TextStreamer

    class RowStreamer(TextStreamer):
        """transformers' own text streamer (as the one-at-a-time backend uses), writing into an ``_Output``."""

        def __init__(self, tokenizer: PreTrainedTokenizerBase, output: _Output) -> None:
            super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
            self.output = output

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            self.output.text(text)

    return RowStreamer


_streamer_class: _StreamerFactory | None = None


def _RowStreamer(tokenizer: PreTrainedTokenizerBase, output: _Output) -> TextStreamer:  # noqa: N802 - a lazily defined class
    global _streamer_class
    if _streamer_class is None:
        _streamer_class = _row_streamer_class()
    return _streamer_class(tokenizer, output)


# --- the process's pools ------------------------------------------------------------

# (backend, model path, generator options): one pool per distinct generator.
_PoolKey = tuple[str, str | None, tuple[tuple[str, Hashable], ...]]
_pools: dict[_PoolKey, GenerationPool] = {}
_pools_lock = threading.Lock()


def get_pool(backend: str, model_path: str | None, **options: Any) -> GenerationPool:
    """This process's pool for a backend and model, created (and the model loaded) on first use.

    Pool options (``max_batch``, ``max_wait``, ``max_queue``, ``timeout``) apply
    when the pool is created; generator options go to ``load_generator``.
    """
    from inference.api import load_generator

    pool_keys = ("max_batch", "max_wait", "max_queue", "timeout")
    pool_options = {k: options.pop(k) for k in pool_keys if k in options}
    key: _PoolKey = (backend, model_path, tuple(sorted(options.items())))
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            generator = load_generator(backend, model_path, **options)
            pool = GenerationPool(generator, **pool_options)
            _pools[key] = pool
            logger.info("generation pool ready in process %d: %s (batching: %s, max batch %d)",
                        os.getpid(), backend, pool.batching, pool.max_batch)
        return pool


def close_pools() -> None:
    """Stop every pool of this process (tests)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def language_models_loaded() -> int:
    """How many generating (non-extractive) models this process holds — 0 in the team web process."""
    from inference import api

    generators = list(getattr(api, "_generators", {}).values())
    return sum(1 for g in generators if getattr(g, "generated", False))


def record_gpu_memory(metrics: Registry | None = None) -> None:
    """Set the GPU memory gauges when torch has CUDA (no-op otherwise, and torch is not imported for it)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return
    m = metrics or default_registry
    for index in range(torch.cuda.device_count()):
        m.set("cairn_generation_gpu_memory_bytes", torch.cuda.memory_allocated(index), device=f"cuda:{index}", kind="allocated")
        m.set("cairn_generation_gpu_memory_bytes", torch.cuda.memory_reserved(index), device=f"cuda:{index}", kind="reserved")
