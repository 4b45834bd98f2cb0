"""API rate limits (access/ratelimit.py): per API key or user, 429 with Retry-After, shared through Redis."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
import redis
from rest_framework.test import APIClient

from access import ratelimit
from access.models import User
from access.services import SYSTEM, api_key_create
from config.env import ConfigError, env_rate

# The machine's Redis at fixed database numbers: every such module runs in one pytest-xdist worker.
pytestmark = [pytest.mark.django_db, pytest.mark.xdist_group("redis-6379")]


@pytest.fixture
def limited(settings):
    settings.CAIRN_RATE_LIMIT = (3, 60)
    ratelimit.reset()
    return settings


def key_client(username: str) -> APIClient:
    user = User.objects.filter(username=username).first() or User.objects.create_user(username=username)
    _, secret = api_key_create(user=user, name="t", actor=SYSTEM)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_a_key_over_its_budget_gets_429_with_retry_after_and_other_keys_are_unaffected(limited):
    first, second = key_client("alice"), key_client("alice")
    assert [first.get("/api/v1/collections").status_code for _ in range(3)] == [200, 200, 200]

    refused = first.get("/api/v1/collections")
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json()["error"]["code"] == "throttled"
    assert second.get("/api/v1/collections").status_code == 200  # each key has its own budget


def test_the_openai_endpoint_is_limited_too_and_answers_in_openai_shape(limited):
    client = key_client("bob")
    for _ in range(3):
        assert client.get("/v1/models").status_code == 200
    refused = client.get("/v1/models")
    assert refused.status_code == 429 and refused["Retry-After"].isdigit()
    assert refused.json()["error"]["type"] == "rate_limit_error"


def test_without_a_key_the_user_is_the_bucket_and_health_is_never_limited(limited):
    client = APIClient()  # personal mode, loopback: the owner
    assert [client.get("/api/v1/collections").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert client.get("/api/v1/health").status_code == 200


def test_zero_turns_the_limit_off(settings):
    settings.CAIRN_RATE_LIMIT = None
    ratelimit.reset()
    client = APIClient()
    assert {client.get("/api/v1/collections").status_code for _ in range(20)} == {200}


def test_redis_counts_are_shared_between_processes():
    connection = redis.Redis.from_url("redis://127.0.0.1:6379/13", socket_connect_timeout=2)
    try:
        connection.ping()
    except redis.exceptions.RedisError as exc:
        pytest.fail(f"this test needs Redis on 127.0.0.1:6379 (see .ci/run): {exc}")
    bucket, rate = f"key:{uuid.uuid4().hex}", ratelimit.Rate(5, 60)
    web1, web2 = ratelimit.RedisCounter(connection), ratelimit.RedisCounter(connection)
    answers = [(web1 if i % 2 else web2).hit(bucket, rate) for i in range(6)]
    assert answers[:5] == [None] * 5 and answers[5] is not None and 0 < answers[5] <= 60


def test_with_redis_down_requests_pass_without_waiting_and_a_warning_is_logged_once(caplog):
    down = ratelimit.RedisCounter(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    with caplog.at_level(logging.WARNING, logger="access.ratelimit"):
        assert down.hit("user:1", ratelimit.Rate(1, 60)) is None
        start = time.monotonic()
        assert all(down.hit("user:1", ratelimit.Rate(1, 60)) is None for _ in range(50))
        assert time.monotonic() - start < 0.2  # not asked again right away: no timeout per request
    assert sum("Redis cannot be reached" in r.getMessage() for r in caplog.records) == 1  # once, not per request


@pytest.mark.parametrize("raw, expected", [("600/min", (600, 60)), ("20/s", (20, 1)), ("5000/hour", (5000, 3600)),
                                           ("0", None), ("off", None)])
def test_the_setting_is_parsed(monkeypatch, raw, expected):
    monkeypatch.setenv("CAIRN_RATE_LIMIT", raw)
    assert env_rate("CAIRN_RATE_LIMIT", "600/min") == expected


@pytest.mark.parametrize("raw", ["600", "ten/min", "600/fortnight", "-1/min"])
def test_a_bad_setting_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv("CAIRN_RATE_LIMIT", raw)
    with pytest.raises(ConfigError, match="CAIRN_RATE_LIMIT"):
        env_rate("CAIRN_RATE_LIMIT", "600/min")
