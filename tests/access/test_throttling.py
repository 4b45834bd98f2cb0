"""Sign-in throttling (issue 11, item 7): per account and per address, audited, shared through Redis in the team shape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.test import Client

from access.models import AuditEvent, User

# The machine's Redis at fixed database numbers: every such module runs in one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("redis-6379")

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password=PASSWORD)


def sign_in(ip: str, username: str, password: str):
    return Client(REMOTE_ADDR=ip).post("/login/", {"username": username, "password": password})


def test_repeated_failures_lock_the_account_and_the_address_out_with_retry_after(alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in("192.0.2.1", "alice", "wrong").status_code == 200  # the form again, with its error
    locked = sign_in("192.0.2.1", "alice", "wrong")
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) == settings.AXES_COOLOFF_TIME.total_seconds()
    assert b"Too many failed sign-ins" in locked.content and b"Try again in 15 minutes" in locked.content
    # Even the right password waits now, from that address or for that account from anywhere …
    assert sign_in("192.0.2.1", "alice", PASSWORD).status_code == 429
    assert sign_in("198.51.100.4", "alice", PASSWORD).status_code == 429
    # … and that address may not try other accounts either.
    User.objects.create_user("bob", password=PASSWORD)
    assert sign_in("192.0.2.1", "bob", PASSWORD).status_code == 429
    events = AuditEvent.objects.filter(action="auth.locked_out")
    assert events.count() >= 3 and all(e.outcome == AuditEvent.Outcome.DENIED for e in events)
    assert {e.ip for e in events} == {"192.0.2.1", "198.51.100.4"}


def test_a_success_before_the_limit_clears_the_count(alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in("192.0.2.1", "alice", "wrong")
    assert sign_in("192.0.2.1", "alice", PASSWORD).status_code == 302
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in("192.0.2.1", "alice", "wrong").status_code == 200


def test_in_the_team_shape_the_count_is_shared_by_every_web_process(tmp_path):
    """Failures made through one process lock the account out in another: the count lives in Redis."""
    db = tmp_path / "shared.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "DJANGO", "DATABASE_URL"))}
    env.update(CAIRN_DATA_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{db}", CAIRN_MODE="team",
               CAIRN_REDIS_URL="redis://127.0.0.1:6379/13", CAIRN_SECRET_KEY="s" * 20 + "-Vq3nX8pL2mR7tY1wZ5cB9dF4gH6jK0",
               CAIRN_ALLOWED_HOSTS="testserver", CAIRN_SECURE_COOKIES="0", DJANGO_SETTINGS_MODULE="config.settings")
    redis.Redis.from_url("redis://127.0.0.1:6379/13").flushdb()
    setup = ("import django; django.setup(); from django.core.management import call_command; "
             "call_command('migrate', verbosity=0); from access.models import User; "
             f"User.objects.create_user('alice', password={PASSWORD!r})")
    attempt = ("import django, sys; django.setup(); from django.test import Client; "
               "r = Client(REMOTE_ADDR=sys.argv[1]).post('/login/', {'username': 'alice', 'password': sys.argv[2]}); "
               "print(r.status_code)")

    def run(code: str, *args: str) -> str:
        done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    run(setup)
    first = [run(attempt, "192.0.2.1", "wrong") for _ in range(5)]  # a fresh process each time
    assert first == ["200", "200", "200", "200", "429"]
    assert run(attempt, "198.51.100.4", PASSWORD) == "429"  # another process, another address: the account waits
    assert redis.Redis.from_url("redis://127.0.0.1:6379/13").keys("cairn:*axes*")
