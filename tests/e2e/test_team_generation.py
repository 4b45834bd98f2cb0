"""Team-shape generation with real processes: a Celery inference worker (threads pool, one batching
scheduler) on Redis, the ASGI web process streaming its events over SSE, and cancellation by disconnect.

The model is a tiny random Qwen2 written to disk and loaded by the worker exactly as a real one.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.pg import create_migrated_database, drop_database
from tests.e2e.processes import Http, Process, child_env, free_port, manage, run_manage
from tests.inference.tiny_models import build_tiny_qwen2

# The machine's Redis at fixed database numbers: every such module runs in one pytest-xdist worker.
pytestmark = [pytest.mark.team, pytest.mark.slow, pytest.mark.xdist_group("redis-6379")]

PG = "postgres://postgres@127.0.0.1:5432"
REDIS_DB = 12
QUESTION = "How many holiday days do employees get?"
# The tiny random model answers this one until the token limit (QUESTION stops on its own after ~240).
LONG_QUESTION = "Who approves remote work?"
# The budget of the generation a test hangs up on: the tiny model writes ~700 tokens a second, so at
# 1500 a busy web process could see the hang-up only after the worker finished (outcome "ok", not
# "cancelled"); this many leaves it tens of seconds. The fixtures raise CAIRN_MAX_NEW_TOKENS to it and
# build the model with room for it (max_positions).
HANG_UP_BUDGET = 12_000


@pytest.fixture(scope="module")
def team_llm(tmp_path_factory):
    import psycopg
    import redis

    try:
        psycopg.connect(f"{PG}/test", connect_timeout=3).close()
        redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}", socket_connect_timeout=3).ping()
    except Exception as exc:
        pytest.fail(f"team-mode tests need PostgreSQL and Redis on 127.0.0.1 (see .ci/run): {exc}")
    name = f"cairn_gen_{secrets.token_hex(4)}"
    url = create_migrated_database(name)  # what `manage.py migrate` makes (tests/e2e/pg.py)
    redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}").flushdb()
    root = tmp_path_factory.mktemp("team-gen")
    model = build_tiny_qwen2(root / "tiny-qwen2", max_positions=HANG_UP_BUDGET + 512, endless=True)
    env = child_env(
        DATABASE_URL=url, CAIRN_REDIS_URL=f"redis://127.0.0.1:6379/{REDIS_DB}",
        CAIRN_SECRET_KEY=secrets.token_urlsafe(40), CAIRN_ALLOWED_HOSTS="127.0.0.1,localhost",
        CAIRN_DATA_DIR=str(root / "shared"), CAIRN_SECURE_COOKIES="0",
        CAIRN_GENERATOR="transformers", CAIRN_LLM_PATH=model, CAIRN_MAX_NEW_TOKENS=str(HANG_UP_BUDGET),
        CAIRN_GEN_MAX_BATCH="8", CAIRN_GEN_BATCH_WAIT_MS="300", CAIRN_GEN_USER_CONCURRENCY="8",
    )
    processes: list[Process] = []
    try:
        token = run_manage(env, "cairn_apikey", "--user", "alice", "--create-user").strip()
        worker = Process("worker-inference", manage("cairn_worker", "inference"), env, root)
        processes.append(worker)
        port = free_port()
        web = Process("web", manage("cairn_web", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
                      env, root)
        processes.append(web)
        Http(f"http://127.0.0.1:{port}", token=token).wait_until_up(web)
        deadline = time.monotonic() + 180
        while "inference worker" not in worker.log() or " ready in " not in worker.log():
            assert worker.alive() and time.monotonic() < deadline, worker.log()
            time.sleep(0.3)
        yield port, token, model, processes, name, env
    finally:
        for process in processes:
            process.stop()
        drop_database(name)


def sse_ask(port: int, token: str | None, payload: dict, *, hang_up_after_tokens: int | None = None) -> list[tuple]:
    """POST /api/v1/ask as SSE; ``(event, data, arrival time)`` in order. Optionally hang up early."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", "/api/v1/ask", body=json.dumps(payload), headers=headers)
    response = conn.getresponse()
    assert response.status == 200, response.read()
    events: list[tuple] = []
    name, data = None, []
    try:
        while True:
            line = response.readline().decode()
            if not line:
                return events
            line = line.rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and name:
                events.append((name, json.loads("".join(data)), time.monotonic()))
                if name in ("done", "error"):
                    return events
                tokens = sum(1 for e in events if e[0] == "token")
                if hang_up_after_tokens is not None and tokens >= hang_up_after_tokens:
                    return events
                name, data = None, []
    finally:
        # Hang up for real: the response's file object keeps the socket open after ``conn.close()`` (until
        # it is garbage-collected), so the server would go on writing into the buffers of a client that
        # only looks gone. ``shutdown`` ends the connection now, as a client that quits does.
        if conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        response.close()
        conn.close()


def metrics(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    assert response.status == 200
    return response.read().decode()


def sample(text: str, name: str, **labels: str) -> list[float]:
    values = []
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            values.append(float(match.group(2)))
    return values


def hang_up_and_wait_for_cancel(port: int, token: str | None) -> None:
    """Ask, hang up after two tokens, and wait until the server counts one more cancelled generation."""
    before = sum(sample(metrics(port), "cairn_generation_requests_total", outcome="cancelled"))
    events = sse_ask(port, token, {"question": LONG_QUESTION, "stream": True, "max_new_tokens": HANG_UP_BUDGET},
                     hang_up_after_tokens=2)
    assert [e[0] for e in events].count("token") == 2
    deadline = time.monotonic() + 30
    while sum(sample(metrics(port), "cairn_generation_requests_total", outcome="cancelled")) <= before:
        assert time.monotonic() < deadline, metrics(port)
        time.sleep(0.2)


def test_the_inference_workers_readiness_probe_sees_its_loaded_model(team_llm):
    """``cairn_ready --pool inference`` (the container's probe) passes once the real worker loaded its model."""
    import json

    env = team_llm[-1]
    body = json.loads(run_manage(env, "cairn_ready", "--pool", "inference"))
    assert body["status"] == "ready" and body["checks"]["model"] == "ok", body


def test_eight_concurrent_streams_are_batched_on_the_worker_and_equal_greedy(team_llm):
    port, token, model, processes, *_ = team_llm
    budgets = [8 + 3 * i for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as clients:
        results = list(clients.map(
            lambda n: sse_ask(port, token, {"question": QUESTION, "stream": True, "max_new_tokens": n}), budgets))

    from inference.api import generate, load_generator
    from inference.types import GenerationRequest

    generator = load_generator("transformers", model)
    for events, budget in zip(results, budgets, strict=True):
        names = [e[0] for e in events]
        assert names[0] == "start" and names[-1] == "done", [p.log() for p in processes]
        assert names.count("token") > 1 and names.index("token") < names.index("citations")
        assert events[0][1]["passages"] == 0  # nothing uploaded: the prompt is the question alone
        done = events[-1][1]
        expected = generate(generator, GenerationRequest(question=QUESTION, passages=(), max_new_tokens=budget))
        assert done["answer"] == expected.answer
        assert "".join(e[1]["text"] for e in events if e[0] == "token") == done["answer"]

    text = metrics(port)
    runs = sample(text, "cairn_generation_batch_size_count", process="inference")
    single = sample(text, "cairn_generation_batch_size_bucket", process="inference", le="1")
    assert runs and single and single[0] < runs[0], text  # some forward passes held more than one request
    assert max(r[-1][1]["metrics"]["batch_size"] for r in results) > 1
    # The web process never loaded the language model; the worker did, once.
    assert sample(text, "cairn_language_models_loaded", process="web") == [0.0]
    assert sample(text, "cairn_language_models_loaded", process="inference") == [1.0]
    worker_log = next(p for p in processes if p.name == "worker-inference").log_path.read_text()  # the whole log
    assert worker_log.count("generation pool ready") == 1


def test_a_client_that_hangs_up_cancels_its_generation_on_the_worker(team_llm):
    port, token, *_ = team_llm
    hang_up_and_wait_for_cancel(port, token)
    # The cancelled request stopped early and left the pool: nothing is running any more.
    assert sample(metrics(port), "cairn_generation_running", process="inference") == [0.0]


def test_admission_refuses_a_user_over_the_limit_across_web_processes(team_llm):
    port, token, _model, _processes, db_name, _env = team_llm
    import psycopg
    import redis

    with psycopg.connect(f"{PG}/{db_name}") as conn:
        (user_id,) = conn.execute("SELECT id FROM access_user WHERE username = 'alice'").fetchone()
    client = redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}")
    # Eight generations of this user already in flight (CAIRN_GEN_USER_CONCURRENCY=8), e.g. from another web process.
    user_key = f"cairn:admission:user:{user_id}"
    far = time.time() + 600
    client.zadd(user_key, {f"held-{i}": far for i in range(8)})
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/api/v1/ask", body=json.dumps({"question": QUESTION}), headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 429 and response.getheader("Retry-After"), body
        assert body["error"]["code"] == "too_many_requests"
    finally:
        client.delete(user_key)
