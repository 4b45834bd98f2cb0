"""Migrated PostgreSQL databases for tests, on the machine's server (127.0.0.1:5432), copied from a template.

``manage.py migrate`` on an empty PostgreSQL database takes 6-10 s on a
2-core machine, and a dozen fixtures need a freshly migrated database of
their own. The first one builds a template with a real ``migrate`` (named by
a digest of every migration file and the lock file, so a new migration or a
new Django builds a new one), and every fixture then gets a copy of it
(``CREATE DATABASE … TEMPLATE``, a file copy inside the server: well under a
second). The copy is what ``migrate`` would have produced: the migrations
touch nothing outside the database (Django's post-migrate handlers write
rows, Cairn's only acts on SQLite). Templates of an older digest are dropped
when a new one is built; the current one is kept for the next run.
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile

from tests.e2e.processes import ROOT, child_env, run_manage

PG = "postgres://postgres@127.0.0.1:5432"
_LOCK = 0x6361_6972  # pg_advisory_lock key: one builder at a time (pytest-xdist processes)


def _digest() -> str:
    hashed = hashlib.sha256()
    for path in sorted(ROOT.glob("*/migrations/*.py")) + [ROOT / "requirements.lock"]:
        hashed.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return hashed.hexdigest()[:16]


def _template() -> str:
    """The current template's name, built (with a real ``migrate``) when it does not exist yet."""
    import psycopg

    name = f"cairn_template_{_digest()}"
    with psycopg.connect(f"{PG}/test", autocommit=True, connect_timeout=3) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
        try:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return name
            stale = [row[0] for row in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'cairn\\_template\\_%%' AND datname <> %s",
                (name,))]
            for old in stale:  # left by an older schema; one in use (another checkout's run) stays
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{old}"')
                except psycopg.errors.ObjectInUse:
                    pass
            building = f"{name}_building"
            conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{building}"')
            try:
                with tempfile.TemporaryDirectory(prefix="cairn-template-") as data_dir:
                    run_manage(child_env(DATABASE_URL=f"{PG}/{building}", CAIRN_TASKS="inline",
                                         CAIRN_SECRET_KEY=secrets.token_urlsafe(50), CAIRN_ALLOWED_HOSTS="localhost",
                                         CAIRN_DATA_DIR=data_dir), "migrate", "--verbosity", "0")
                conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
            except BaseException:
                conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
                raise
            return name
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))


def create_migrated_database(name: str) -> str:
    """Create database ``name`` as a copy of the migrated template; returns its URL."""
    import psycopg

    template = _template()
    with psycopg.connect(f"{PG}/test", autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return f"{PG}/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
