"""``/readyz`` of a started web process: not ready while migrations are pending or Redis is away, ready after."""

from __future__ import annotations

import time

import pytest

from tests.e2e.processes import Http, Process, child_env, free_port, manage, run_manage
from tests.e2e.services import Redis

pytestmark = pytest.mark.slow


def _ready(http: Http, want: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = http.get("/readyz")
        if status == want or time.monotonic() > deadline:
            assert status == want, body
            return body
        time.sleep(0.3)


def test_readyz_follows_migrations_and_redis(tmp_path):
    redis = Redis(tmp_path)
    redis.kill()  # its port is now closed: the configured Redis is unreachable
    port = free_port()
    env = child_env(CAIRN_DATA_DIR=str(tmp_path / "data"), CAIRN_REDIS_URL=redis.url)
    web = Process("cairn_web", manage("cairn_web", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
                  env, tmp_path)
    http = Http(f"http://127.0.0.1:{port}")
    try:
        http.wait_until_up(web)
        status, alive = http.get("/healthz")
        assert status == 200 and alive["status"] == "ok"  # alive, though not ready

        body = _ready(http, 503)
        assert body["failing"] == ["migrations", "redis"]
        assert "manage.py migrate" in body["checks"]["migrations"]

        run_manage(env, "migrate", "--verbosity", "0")
        body = _ready(http, 503)
        assert body["failing"] == ["redis"]

        redis.start()
        body = _ready(http, 200)
        assert body["checks"] == {"database": "ok", "migrations": "ok", "redis": "ok", "index": "ok"}

        redis.kill()
        assert _ready(http, 503)["failing"] == ["redis"]
    finally:
        web.stop()
        redis.close()
