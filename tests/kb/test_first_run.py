"""Management commands on a fresh data directory: personal mode migrates by itself, the team shape says
`migrate` must run first, and user errors are one line without a traceback."""

from __future__ import annotations

import secrets
import subprocess

import pytest

from tests.e2e.processes import child_env, manage

# The machine's Redis at fixed database numbers: every such module runs in one pytest-xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("redis-6379")]

PG = "postgresql://postgres@127.0.0.1:5432"


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(manage(*args), env=env, capture_output=True, text=True, timeout=300)


def test_commands_on_a_fresh_personal_data_directory(tmp_path):
    env = child_env(CAIRN_DATA_DIR=str(tmp_path / "fresh"))
    (tmp_path / "dataset").mkdir()
    for args, ok in [
        (("cairn_search", "boiler maintenance"), True),
        (("cairn_audit_verify",), True),
        (("cairn_ask", "Who approves remote work?"), True),
        (("cairn_eval", str(tmp_path / "dataset")), False),             # not a dataset: a user error
        (("cairn_search", "x", "--collection", "No such"), False),      # unknown collection
        (("cairn_ingest", str(tmp_path / "missing"), "--collection", "C"), False),  # missing file
        (("cairn_search", "x", "-k", "many"), False),                   # bad option
    ]:
        done = _run(env, *args)
        assert "Traceback" not in done.stderr + done.stdout, (args, done.stderr)
        assert (done.returncode == 0) == ok, (args, done.returncode, done.stderr)
        if not ok:
            errors = [line for line in done.stderr.splitlines() if "rror" in line]
            assert len(errors) == 1, (args, done.stderr)


def test_a_team_command_before_migrate_says_to_run_it(tmp_path):
    psycopg = pytest.importorskip("psycopg")
    name = f"cairn_first_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(f"{PG}/test", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    try:
        env = child_env(DATABASE_URL=f"{PG}/{name}", CAIRN_REDIS_URL="redis://127.0.0.1:6379/15",
                        CAIRN_SECRET_KEY=secrets.token_urlsafe(50), CAIRN_ALLOWED_HOSTS="kb.example.org",
                        CAIRN_DATA_DIR=str(tmp_path / "team"))
        done = _run(env, "cairn_search", "anything")
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [done.stderr.strip()]
        assert "run `python manage.py migrate` first" in done.stderr
    finally:
        with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
