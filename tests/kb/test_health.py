"""``/healthz`` and ``/readyz`` in-process: no sign-in, a JSON body, 503 naming what is not ready."""

from __future__ import annotations

import pytest

from tests.e2e.processes import free_port

pytestmark = pytest.mark.django_db


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
