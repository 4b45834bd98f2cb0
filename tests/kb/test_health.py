"""``/healthz`` and ``/readyz`` in-process: no sign-in, a JSON body, 503 naming what is not ready."""

from __future__ import annotations

import pytest

from tests.e2e.processes import free_port

# The machine's Redis at fixed database numbers: every such module runs in one pytest-xdist worker.
pytestmark = [pytest.mark.django_db, pytest.mark.xdist_group("redis-6379")]


def test_healthz_and_its_old_alias_answer_without_signing_in(client):
    for path in ("/healthz", "/api/v1/health"):
        response = client.get(path, REMOTE_ADDR="203.0.113.9")
        assert response.status_code == 200
        assert response.json()["status"] == "ok"


def test_readyz_is_ready_with_every_check_named(client, isolated_storage):
    response = client.get("/readyz", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "migrations": "ok", "index": "ok"}  # no Redis in this shape


def test_readyz_names_an_unreachable_redis_without_its_address(client, settings, isolated_storage):
    port = free_port()  # nothing listens there
    settings.CAIRN_TASKS = "celery"
    settings.CAIRN_REDIS_URL = f"redis://:hunter2secret@127.0.0.1:{port}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["redis"]
    assert body["checks"]["redis"].startswith("Redis cannot be reached")
    assert "hunter2secret" not in response.content.decode() and str(port) not in response.content.decode()


def test_readyz_names_an_unreadable_index(client, settings, tmp_path):
    blocked = tmp_path / "index-file"
    blocked.write_text("not a directory")
    settings.CAIRN_INDEX_DIR = blocked
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["index"]


def test_probes_are_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)


def _cairn_ready(*args: str) -> tuple[int, dict]:
    import io
    import json

    from django.core.management import call_command

    out = io.StringIO()
    try:
        call_command("cairn_ready", *args, stdout=out)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, json.loads(out.getvalue())


def test_cairn_ready_for_an_inference_pool_needs_this_hosts_worker_to_have_its_model_loaded(
        settings, isolated_storage):
    import redis

    from inference.transport import ALIVE_KEY, inference_worker_beat

    settings.CAIRN_TASKS = "celery"
    settings.CAIRN_REDIS_URL = "redis://127.0.0.1:6379/14"
    client = redis.Redis.from_url(settings.CAIRN_REDIS_URL)
    client.delete(ALIVE_KEY)
    try:
        code, body = _cairn_ready("--pool", "index")  # no model check for the other pools
        assert code == 0 and "model" not in body["checks"], body

        code, body = _cairn_ready("--pool", "inference", "--host", "gpu-node-7")
        assert code == 1 and body["failing"] == ["model"], body
        assert "model loaded" in body["checks"]["model"]

        inference_worker_beat(client, "gpu-node-70:41")  # another host whose name merely starts alike
        assert _cairn_ready("--pool", "inference", "--host", "gpu-node-7")[0] == 1
        inference_worker_beat(client, "gpu-node-7:1234")  # a worker beats only once its model is loaded
        code, body = _cairn_ready("--pool", "inference", "--host", "gpu-node-7")
        assert code == 0 and body["checks"]["model"] == "ok" and body["status"] == "ready", body
    finally:
        client.delete(ALIVE_KEY)
        client.close()
