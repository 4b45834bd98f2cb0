"""``CAIRN_RATE_LIMIT`` across web processes: ``cairn_web --workers 2`` sharing one budget per key through Redis."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid

import pytest
import redis

from tests.e2e.processes import Http, Process, child_env, free_port, manage, run_manage

# The machine's Redis at fixed database numbers: every such module runs in one pytest-xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("redis-6379")]

REDIS_DB = 12
RATE = 10  # per day: a window boundary will not fall inside the test


def status_of(base: str, key: str) -> tuple[int, str | None]:
    request = urllib.request.Request(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # a new connection each: either worker
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After")


def test_two_web_workers_share_one_budget_per_key(tmp_path):
    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.exceptions.RedisError as exc:
        pytest.fail(f"this test needs Redis on 127.0.0.1:6379 (see .ci/run): {exc}")
    # The budget is counted per key id for a day, and every run's fresh database numbers its first key 1:
    # a second run the same day would otherwise start with this one's count.
    redis.Redis.from_url(url).flushdb()
    env = child_env(CAIRN_DATA_DIR=str(tmp_path / "data"), CAIRN_REDIS_URL=url, CAIRN_TASKS="local",
                    CAIRN_RATE_LIMIT=f"{RATE}/day", CAIRN_SECRET_KEY=uuid.uuid4().hex * 2)
    run_manage(env, "migrate", "--verbosity", "0")
    key = run_manage(env, "cairn_apikey", "--user", f"rl-{uuid.uuid4().hex[:8]}", "--create-user").strip()
    port = free_port()
    web = Process("web", manage("cairn_web", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"), env,
                  tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        Http(base).wait_until_up(web)
        answers = [status_of(base, key) for _ in range(3 * RATE)]
    finally:
        web.stop()
    statuses = [status for status, _ in answers]
    # Counted per process, two workers would let up to 2 × RATE through.
    assert statuses.count(200) == RATE and statuses[:RATE] == [200] * RATE, statuses
    assert set(statuses[RATE:]) == {429}
    assert all(retry is not None and int(retry) > 0 for _, retry in answers[RATE:])
