"""The generation pool on tiny random models: batching, equality with one-at-a-time greedy, streaming, cancel."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from inference import backends
from inference.api import generate, load_generator
from inference.metrics import Registry, render
from inference.pool import GenerationPool, PoolFull, close_pools, get_pool
from inference.types import GenerationRequest, Passage
from tests.inference.tiny_models import build_tiny_deepseek_v3

pytestmark = pytest.mark.usefixtures("fresh_generators")


@pytest.fixture(scope="session")
def tiny_deepseek_v3(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random DeepseekV3 (MLA + MoE) named like an R1 model, so reasoning is expected."""
    return build_tiny_deepseek_v3(tmp_path_factory.mktemp("models") / "DeepSeek-R1-tiny-v3")


def _requests(n: int, max_new_tokens: int = 12) -> list[GenerationRequest]:
    """Prompts of different lengths (so left-padding matters) and different answer budgets."""
    return [
        GenerationRequest(
            question=f"Question {i}: how many holiday days do employees get?" + " And why?" * (i % 4),
            passages=(Passage(1, 10 + i, 100, "Handbook", 3, "Leave",
                              "Employees get twenty holiday days a year. " * (1 + i % 3)),),
            max_new_tokens=max_new_tokens + 2 * i,
            request_id=f"{i:032x}",
        )
        for i in range(n)
    ]


def _final(ticket, timeout: float = 120) -> dict:
    return list(ticket.events(timeout=timeout))[-1]


@pytest.mark.parametrize("model", ["tiny_qwen2", "tiny_deepseek_v3"])
def test_eight_concurrent_requests_run_batched_and_equal_sequential_greedy(model, request) -> None:
    generator = load_generator("transformers", request.getfixturevalue(model))
    requests = _requests(8, max_new_tokens=12 if model == "tiny_qwen2" else 6)
    sequential = [generate(generator, r) for r in requests]
    pool = GenerationPool(generator, max_batch=8, max_wait=0.5, metrics=Registry())
    try:
        with ThreadPoolExecutor(max_workers=8) as clients:
            finals = list(clients.map(lambda r: _final(pool.submit(r)), requests))
    finally:
        pool.close()
    assert [f["event"] for f in finals] == ["done"] * 8, finals
    assert [f["answer"]["answer"] for f in finals] == [a.answer for a in sequential]
    assert [f["answer"]["reasoning"] for f in finals] == [a.reasoning for a in sequential]
    assert [tuple(f["answer"]["cited_numbers"]) for f in finals] == [a.cited_numbers for a in sequential]
    # What the worker actually ran: forward passes over more than one request at once.
    assert max(pool.batch_sizes) > 1, pool.batch_sizes
    assert max(f["metrics"]["batch_size"] for f in finals) > 1


def test_requests_arriving_during_a_batch_join_it_and_still_equal_greedy(tiny_qwen2: str) -> None:
    generator = load_generator("transformers", tiny_qwen2)
    requests = _requests(6, max_new_tokens=10)
    sequential = [generate(generator, r).answer for r in requests]
    pool = GenerationPool(generator, max_batch=4, max_wait=0.0, metrics=Registry())
    try:
        tickets = [pool.submit(r) for r in requests[:2]]
        next(tickets[0].events(timeout=60))  # the first batch is decoding
        tickets += [pool.submit(r) for r in requests[2:]]
        finals = [_final(t) for t in tickets]
    finally:
        pool.close()
    assert [f["answer"]["answer"] for f in finals] == sequential
    assert max(pool.batch_sizes) >= 3


def test_the_model_is_loaded_once_and_serves_many_requests(tiny_qwen2: str, monkeypatch) -> None:
    loads = []
    real_create = backends.create_generator

    def counting_create(*args, **kwargs):
        loads.append(args)
        return real_create(*args, **kwargs)

    monkeypatch.setattr(backends, "create_generator", counting_create)
    monkeypatch.setattr("inference.api.create_generator", counting_create)
    try:
        finals = []
        for r in _requests(5, max_new_tokens=4):
            pool = get_pool("transformers", tiny_qwen2, max_batch=4)
            finals.append(_final(pool.submit(r)))
        assert [f["event"] for f in finals] == ["done"] * 5
        assert len(loads) == 1
    finally:
        close_pools()


def test_tokens_stream_incrementally_before_done(tiny_qwen2: str) -> None:
    # The cited prompt: an answer to the plain one also gets an attributed marker that was never streamed.
    generator = load_generator("transformers", tiny_qwen2, prompt="cited")
    pool = GenerationPool(generator, metrics=Registry())
    try:
        # Greedy on this prompt runs for hundreds of tokens (357 with the prompt of issue 15 before EOS), a few
        # hundred events, under a second on an idle CPU. Long enough to tell the first piece's arrival from the last.
        submitted = time.monotonic()
        ticket = pool.submit(_requests(1, max_new_tokens=1000)[0])
        arrivals = [(time.monotonic(), e) for e in ticket.events(timeout=60)]
    finally:
        pool.close()
    tokens = [t for t, e in arrivals if e["event"] == "token"]
    final = arrivals[-1][1]
    assert final["event"] == "done", final
    assert final["metrics"]["tokens"] >= 300, final["metrics"]  # the answer is long enough to tell
    assert len(tokens) >= 100, len(tokens)  # many pieces, not one or two
    assert "".join(e["text"] for _, e in arrivals if e["event"] == "token") == final["answer"]["answer"]
    # Incremental, as seen by the reader: the first piece arrived early in the generation. Were the answer
    # buffered and delivered at the end, first and last would arrive together (ratio ~1); streamed, the
    # ratio is a few percent (prefill + one decode step against hundreds of steps). 0.25 leaves room for a
    # loaded machine stalling the pool thread before its first token.
    time_to_first, total = tokens[0] - submitted, tokens[-1] - submitted
    assert time_to_first <= 0.25 * total, (time_to_first, total, final["metrics"])
    metrics = final["metrics"]
    assert metrics["tokens"] > 1 and metrics["time_to_first_token_s"] <= metrics["total_s"]


def test_a_cancelled_request_stops_early_and_frees_its_batch_slot(tiny_qwen2: str) -> None:
    generator = load_generator("transformers", tiny_qwen2)
    pool = GenerationPool(generator, max_batch=1, max_wait=0.0, metrics=Registry())
    long, short = _requests(2, max_new_tokens=1500)
    short = GenerationRequest(question=short.question, passages=short.passages, max_new_tokens=5)
    try:
        first = pool.submit(long)
        waiting = pool.submit(short)  # max_batch=1: waits for the long one's slot
        events = first.events(timeout=60)
        next(events)
        assert pool.depth() == (1, 1)
        first.cancel()
        final = list(events)[-1]
        assert final["event"] == "error" and final["code"] == "cancelled"
        assert final["metrics"]["tokens"] < 1500
        assert _final(waiting, timeout=30)["event"] == "done"  # the slot went to the waiting request
        assert pool.depth() == (0, 0)
    finally:
        pool.close()


def test_a_request_cancelled_while_waiting_leaves_the_queue(tiny_qwen2: str) -> None:
    generator = load_generator("transformers", tiny_qwen2)
    pool = GenerationPool(generator, max_batch=1, max_wait=0.0, metrics=Registry())
    long, queued = _requests(2, max_new_tokens=400)
    try:
        running = pool.submit(long)
        ticket = pool.submit(queued)
        next(running.events(timeout=60))
        ticket.cancel()
        final = _final(ticket, timeout=10)
        assert final["code"] == "cancelled" and final["metrics"]["tokens"] == 0
        running.cancel()
    finally:
        pool.close()


def test_a_full_pool_refuses_and_a_slow_generation_times_out(tiny_qwen2: str) -> None:
    generator = load_generator("transformers", tiny_qwen2)
    # The tiny random model writes ~400 tokens before its end-of-text in ~0.24 s on a fast idle 2-core host
    # (1,700 tokens/s), so 0.25 s could let it finish; 0.05 s is cut short on any host (a slower one even
    # before the first token, which is a timeout too).
    pool = GenerationPool(generator, max_batch=1, max_queue=2, timeout=0.05, metrics=Registry())
    try:
        tickets = [pool.submit(r) for r in _requests(2, max_new_tokens=1500)]
        with pytest.raises(PoolFull):
            pool.submit(_requests(1)[0])
        final = _final(tickets[0], timeout=30)
        assert final["event"] == "error" and final["code"] == "timeout"
        assert final["metrics"]["tokens"] < 1500
    finally:
        pool.close()


def test_backends_without_batching_run_through_the_pool(request_two_passages: GenerationRequest) -> None:
    generator = load_generator("extractive")
    pool = GenerationPool(generator, metrics=Registry())
    try:
        final = _final(pool.submit(request_two_passages))
    finally:
        pool.close()
    assert not pool.batching
    expected = generate(generator, request_two_passages)
    assert final["answer"]["answer"] == expected.answer
    assert tuple(final["answer"]["cited_numbers"]) == expected.cited_numbers


def test_pool_metrics_render_as_prometheus_text(tiny_qwen2: str) -> None:
    registry = Registry()
    pool = GenerationPool(load_generator("transformers", tiny_qwen2), max_wait=0.3, metrics=registry)
    try:
        tickets = [pool.submit(r) for r in _requests(3, max_new_tokens=3)]
        for t in tickets:
            _final(t)
    finally:
        pool.close()
    text = render([({"worker": "w1"}, registry.snapshot())])
    assert "# TYPE cairn_generation_batch_size histogram" in text
    assert 'cairn_generation_requests_total{outcome="ok",worker="w1"} 3' in text
    assert 'cairn_generation_request_batch_size_count{worker="w1"} 3' in text
    assert 'cairn_generation_queue_depth{worker="w1"} 0' in text
    for name in ("queue_wait_seconds", "time_to_first_token_seconds", "tokens_per_second"):
        assert f'cairn_generation_{name}_count{{worker="w1"}} 3' in text


def test_events_reach_a_thread_waiting_on_the_ticket(tiny_qwen2: str) -> None:
    pool = GenerationPool(load_generator("transformers", tiny_qwen2), metrics=Registry())
    woken = threading.Event()
    try:
        ticket = pool.submit(_requests(1, max_new_tokens=3)[0])
        ticket.set_waker(woken.set)
        assert woken.wait(30)
        assert _final(ticket)["event"] == "done"
    finally:
        pool.close()


def test_a_sampling_generator_samples_in_the_batch_and_still_finishes(tiny_qwen2: str) -> None:
    generator = load_generator("transformers", tiny_qwen2, do_sample=True, temperature=0.8, top_p=0.9)
    pool = GenerationPool(generator, max_batch=4, max_wait=0.2, metrics=Registry())
    try:
        finals = [_final(t) for t in [pool.submit(r) for r in _requests(3, max_new_tokens=6)]]
    finally:
        pool.close()
    assert [f["event"] for f in finals] == ["done"] * 3
    assert all(0 < f["metrics"]["tokens"] <= 6 + 2 * i for i, f in enumerate(finals))


class _ReasoningBackend:
    """A backend (the ``Generator`` protocol) whose stream is already split, as the vllm/openai ones are."""

    name = "scripted"
    generated = True

    def stream(self, request: GenerationRequest):
        from inference.types import StreamEvent

        yield StreamEvent("reasoning", "The passage says twenty")
        yield StreamEvent("reasoning", " days.")
        yield StreamEvent("answer", "Employees get twenty days")
        yield StreamEvent("answer", " [1].")


def test_reasoning_travels_on_its_own_channel_before_the_answer(request_two_passages: GenerationRequest) -> None:
    pool = GenerationPool(_ReasoningBackend(), metrics=Registry())
    try:
        events = list(pool.submit(request_two_passages).events(timeout=10))
    finally:
        pool.close()
    assert [e["event"] for e in events] == ["reasoning", "reasoning", "token", "token", "done"]
    done = events[-1]["answer"]
    assert done["reasoning"] == "The passage says twenty days."
    assert done["answer"] == "Employees get twenty days [1]." and done["cited_numbers"] == [1]


def test_the_r1_models_reasoning_and_answer_equal_one_at_a_time_generation(tiny_r1: str) -> None:
    generator = load_generator("transformers", tiny_r1)
    assert generator.expect_reasoning
    requests = _requests(4, max_new_tokens=8)
    expected = [generate(generator, r) for r in requests]
    pool = GenerationPool(generator, max_batch=4, max_wait=0.3, metrics=Registry())
    try:
        finals = [_final(t) for t in [pool.submit(r) for r in requests]]
    finally:
        pool.close()
    assert [(f["answer"]["reasoning"], f["answer"]["answer"]) for f in finals] == [
        (a.reasoning, a.answer) for a in expected
    ]


def test_finish_reason_says_whether_an_answer_was_cut_at_the_token_limit(tiny_qwen2: str, monkeypatch) -> None:
    generator = load_generator("transformers", tiny_qwen2)
    short = _requests(1, max_new_tokens=3)[0]
    # Given a request whose greedy answer runs past its budget (this random model writes no EOS)
    alone = generate(generator, short)
    assert (alone.finish_reason, alone.model) == ("length", Path(tiny_qwen2).name)
    pool = GenerationPool(generator, metrics=Registry())
    try:
        final = _final(pool.submit(short))
    finally:
        pool.close()
    assert final["answer"]["finish_reason"] == "length" and final["answer"]["model"] == Path(tiny_qwen2).name

    # When the model's second greedy token is made its end of text, the same question ends by itself
    inputs = generator.encode(short)
    written = generator.model.generate(**inputs, **generator._generate_options(short))[0, inputs["input_ids"].shape[-1]:]
    monkeypatch.setattr(generator.model.generation_config, "eos_token_id", int(written[1]))
    roomy = dataclasses.replace(short, max_new_tokens=10)
    assert generate(generator, roomy).finish_reason == "stop"
    pool = GenerationPool(generator, metrics=Registry())
    try:
        final = _final(pool.submit(roomy))
    finally:
        pool.close()
    assert final["event"] == "done" and final["answer"]["finish_reason"] == "stop"
    assert final["metrics"]["tokens"] <= 2
