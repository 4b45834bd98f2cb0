"""POST /api/v1/ask streamed as server-sent events, admission control and GET /metrics (personal shape, in process).

The language model is a tiny random Qwen2 loaded from disk the way users
load theirs; generation runs in the real in-process pool.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from inference.metrics import registry
from inference.pool import close_pools
from kb import answering
from tests.inference.tiny_models import build_tiny_qwen2

# The machine's Redis at fixed database numbers: every such module runs in one pytest-xdist worker.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.xdist_group("redis-6379")]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_qwen2(tmp_path_factory.mktemp("models") / "tiny-qwen2")


@pytest.fixture
def llm(settings, tiny_model):
    settings.CAIRN_LLM_BACKEND = "transformers"
    settings.CAIRN_LLM_PATH = tiny_model
    settings.CAIRN_LLM_OPTIONS = {}
    settings.CAIRN_MAX_NEW_TOKENS = 2000
    answering.reset_admission()
    yield settings
    close_pools()
    answering.reset_admission()


def sse_events(raw: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in raw.decode().split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        name = next(line[7:] for line in lines if line.startswith("event: "))
        data = json.loads("".join(line[6:] for line in lines if line.startswith("data: ")))
        events.append((name, data))
    return events


def ask(api, **body):
    return api.post("/api/v1/ask", {"question": "How many holiday days do employees get?", **body}, format="json")


def test_a_streamed_answer_arrives_as_token_events_then_citations_and_done(api, llm):
    response = ask(api, stream=True, max_new_tokens=40)

    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    events = sse_events(b"".join(response.streaming_content))
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-2:] == ["citations", "done"], names
    tokens = [data["text"] for name, data in events if name == "token"]
    assert len(tokens) > 1  # incremental, not one lump
    done = events[-1][1]
    assert "".join(tokens) == done["answer"] and done["backend"] == "transformers" and done["generated"] is True
    assert done["metrics"]["tokens"] <= 40 and done["metrics"]["batch_size"] >= 1


def test_accept_text_event_stream_also_streams_and_errors_stay_json(api, llm):
    response = api.post("/api/v1/ask", {"question": "Holiday days?", "max_new_tokens": 5}, format="json",
                        HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    assert [n for n, _ in sse_events(b"".join(response.streaming_content))][-1] == "done"

    bad = api.post("/api/v1/ask", {"question": ""}, format="json", HTTP_ACCEPT="text/event-stream")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"


def test_max_new_tokens_is_capped_by_the_setting(api, llm):
    llm.CAIRN_MAX_NEW_TOKENS = 3
    response = ask(api, stream=True, max_new_tokens=500)
    done = sse_events(b"".join(response.streaming_content))[-1][1]
    assert done["metrics"]["tokens"] <= 3


def test_a_user_over_the_concurrency_limit_gets_429_and_a_disconnect_frees_the_slot(api, llm):
    llm.CAIRN_GEN_USER_CONCURRENCY = 1
    answering.reset_admission()
    cancelled_before = registry.value("cairn_generation_requests_total", outcome="cancelled")

    running = ask(api, stream=True, max_new_tokens=1500)  # in flight until its response is closed
    refused = ask(api)

    assert refused.status_code == 429 and refused["Retry-After"].isdigit()
    assert refused.json()["error"]["code"] == "too_many_requests"
    running.close()  # what the server does when the client goes away
    for _ in range(200):  # the pool drops the row at its next decode step
        if registry.value("cairn_generation_requests_total", outcome="cancelled") > cancelled_before:
            break
        time.sleep(0.05)
    assert registry.value("cairn_generation_requests_total", outcome="cancelled") == cancelled_before + 1
    assert ask(api, max_new_tokens=3).status_code == 200


def test_a_full_pool_answers_503_with_retry_after(api, llm):
    llm.CAIRN_GEN_QUEUE_SIZE = 1
    answering.reset_admission()
    answering.admission().acquire("someone-else", "f" * 32)  # another user's generation in flight
    try:
        response = ask(api)
        assert response.status_code == 503 and int(response["Retry-After"]) > 0
        assert response.json()["error"]["code"] == "unavailable"
    finally:
        answering.admission().release("someone-else", "f" * 32)
    assert ask(api, max_new_tokens=3).status_code == 200


def test_metrics_are_prometheus_text_for_loopback_or_token_only(api, llm, client):
    assert ask(api, max_new_tokens=3).status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for name in ("cairn_generation_batch_size_bucket", "cairn_generation_time_to_first_token_seconds_count",
                 "cairn_generation_tokens_per_second_sum", "cairn_generation_queue_wait_seconds_count",
                 "cairn_generation_queue_depth", "cairn_language_models_loaded"):
        assert name in text, name

    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 404
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 404
    llm.CAIRN_METRICS_TOKEN = "s3cret-metrics"
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer nope").status_code == 404
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9",
                      HTTP_AUTHORIZATION="Bearer s3cret-metrics").status_code == 200


def test_reasoning_and_errors_are_framed_as_their_own_sse_events():
    from types import SimpleNamespace

    from kb.api.ask_stream import EventFramer

    framer = EventFramer(SimpleNamespace(generation_id="a" * 32), ())
    assert sse_events(framer.frames({"event": "reasoning", "text": "think\nmore"})) == [
        ("reasoning", {"text": "think\nmore"})]
    [(name, data)] = sse_events(framer.frames({"event": "error", "code": "timeout", "message": "Too slow."}))
    assert name == "error" and data["error"]["code"] == "timeout" and data["error"]["message"] == "Too slow."
    assert framer.frames({"event": "keepalive"}).startswith(b":")


def test_with_no_inference_worker_an_ask_is_refused_at_once_with_503(api, settings):
    """Team shape, nothing consuming the inference queue: say so within seconds, not after CAIRN_ASK_TIMEOUT."""
    import time

    import redis

    from kb import answering

    settings.CAIRN_TASKS = "celery"
    settings.CAIRN_REDIS_URL = "redis://127.0.0.1:6379/14"
    redis.Redis.from_url(settings.CAIRN_REDIS_URL).flushdb()
    answering.reset_admission()
    try:
        started = time.monotonic()
        for stream in (False, True):
            response = api.post("/api/v1/ask", {"question": "When do fire drills happen?", "stream": stream},
                                format="json")
            assert response.status_code == 503, response.content
            assert response["Retry-After"] and "No inference worker is running" in response.json()["error"]["message"]
        assert time.monotonic() - started < 5
        assert answering.admission().in_flight() == 0  # the refused asks released their slots
    finally:
        answering.reset_admission()


def test_an_answer_names_its_model_and_says_when_it_was_cut_at_the_token_limit(api, llm):
    # Given a model that writes no end of text on this prompt (greedy to the budget)
    done = sse_events(b"".join(ask(api, stream=True, max_new_tokens=5).streaming_content))[-1][1]
    # Then the answer is marked as cut at the limit, and names the model directory
    assert (done["finish_reason"], done["truncated"], done["model"]) == ("length", True, "tiny-qwen2")
    plain = ask(api, max_new_tokens=5).json()
    assert (plain["finish_reason"], plain["truncated"], plain["model"]) == ("length", True, "tiny-qwen2")


def test_the_openai_shape_reports_finish_reason_length_for_a_cut_answer():
    from inference.types import Answer
    from kb.api.openai import ChunkFramer, completion_out

    cut = Answer(answer="Twenty", reasoning="", cited_numbers=(), backend="transformers", generated=True,
                 passages_used=0, model="m", finish_reason="length")
    assert completion_out(cut, (), model="handbook")["choices"][0]["finish_reason"] == "length"
    from inference.wire import answer_to_dict

    framer = ChunkFramer(model="handbook", passages=())
    last = framer.frames({"event": "done", "answer": answer_to_dict(cut)}).decode().split("\n\n")
    final = json.loads(next(block[6:] for block in reversed(last) if block.startswith("data: {")))
    assert final["choices"][0]["finish_reason"] == "length"
    whole = completion_out(dataclasses.replace(cut, finish_reason="stop"), (), model="handbook")
    assert whole["choices"][0]["finish_reason"] == "stop"
