"""The permission tests again, on PostgreSQL (JSON lookups, casts and guardian's text ids differ there).

Runs pytest in a subprocess with ``CAIRN_TEST_DATABASE_URL`` pointing at a
uniquely named database on 127.0.0.1:5432; pytest-django creates
``test_<name>`` and drops it when that run ends, and this test checks that
nothing is left behind.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.team, pytest.mark.slow]

PG = "postgres://postgres@127.0.0.1:5432"
ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    "tests/access/test_policy.py",
    "tests/kb/test_permissions.py",
    "tests/kb/test_api_permissions.py",
    "tests/kb/test_chokepoint.py",
]


def _databases(prefix: str) -> list[str]:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", connect_timeout=3, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [f"%{prefix}%"]).fetchall()
    return [row[0] for row in rows]


def test_permission_tests_pass_on_postgresql(tmp_path):
    try:
        _databases("cairn_perm_")
    except Exception as exc:  # say why instead of failing obscurely
        pytest.fail(f"the PostgreSQL permission tests need PostgreSQL on 127.0.0.1:5432: {exc}")
    name = f"cairn_perm_{secrets.token_hex(4)}"
    env = {
        **os.environ,
        "CAIRN_TEST_DATABASE_URL": f"{PG}/{name}",
        "CAIRN_DATA_DIR": str(tmp_path / "data"),
        # Fewer generated worlds than the SQLite run: the point here is the SQL, not the search space.
        "CAIRN_HYPOTHESIS_EXAMPLES": os.environ.get("CAIRN_PG_HYPOTHESIS_EXAMPLES", "40"),
        "CAIRN_HYPOTHESIS_DERANDOMIZE": "1",  # the same examples every run (tests/conftest.py)
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--create-db", *MODULES],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.split("\n")[-2]
    assert _databases(name) == [], "the temporary database was not dropped"


def test_the_subprocess_really_uses_postgresql(tmp_path):
    """Guard: CAIRN_TEST_DATABASE_URL must switch the suite's database, or the test above proves nothing."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import pytest\n"
        "@pytest.mark.django_db\n"
        "def test_vendor():\n"
        "    from django.db import connection\n"
        "    assert connection.vendor == 'postgresql'\n"
    )
    name = f"cairn_perm_{secrets.token_hex(4)}"
    env = {**os.environ, "CAIRN_TEST_DATABASE_URL": f"{PG}/{name}", "CAIRN_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "-c", str(ROOT / "pyproject.toml"), str(probe)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert _databases(name) == []
