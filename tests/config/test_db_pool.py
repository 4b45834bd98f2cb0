"""The web process's PostgreSQL pool (config.env.pool_connections): when a borrowed connection is checked.

Against the machine's PostgreSQL (127.0.0.1:5432, database ``test``), through the pool Django itself builds
from a ``DATABASES`` entry that ``pool_connections`` configured, its check narrowed as ``config/asgi.py``
narrows it (``pool_check_if_idle``).  A connection broken behind the pool's back (its server
process terminated, as a database restart does) is replaced, whether it sat idle for over
``POOL_CHECK_IDLE_S`` (a query) or not (its socket has the server's goodbye to read); a healthy one lent
moments ago is lent again without a round trip.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from django.db.utils import ConnectionHandler

from config import env

URL = "postgresql://postgres@127.0.0.1:5432/test"
pytestmark = pytest.mark.team  # the machine's PostgreSQL (see .ci/run)


@pytest.fixture
def pool():
    """The pool ``config/asgi.py`` gives a team web process (``pool_web_database``), of a handler of its own."""
    try:
        psycopg.connect(URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"this test needs PostgreSQL on 127.0.0.1:5432 (see .ci/run): {exc}")
    # Django keeps pools per alias, process-wide: an alias no other database of the suite has.
    handler = ConnectionHandler({"default": {"ENGINE": "django.db.backends.dummy"},
                                 "pool-test": env.database_from_url("DATABASE_URL", URL)})
    env.pool_web_database(handler, "pool-test", size=1, timeout=3)
    wrapper = handler["pool-test"]
    wrapper.pool.open(wait=True)
    yield wrapper.pool
    wrapper.close_pool()


def backend_of(connection: psycopg.Connection) -> int:
    return connection.execute("SELECT pg_backend_pid()").fetchone()[0]


def terminate(pid: int) -> None:
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_connection_idle_longer_than_the_window_is_checked_and_replaced(pool):
    with pool.connection() as connection:
        broken = backend_of(connection)
    terminate(broken)
    [idle] = pool._pool
    setattr(idle, env._LENT_AT, getattr(idle, env._LENT_AT) - env.POOL_CHECK_IDLE_S - 0.1)
    with pool.connection() as connection:
        assert backend_of(connection) != broken  # the check failed, the pool connected afresh


def gone(pid: int) -> None:
    """Wait until the server process has ended (pg_terminate_backend only signals it)."""
    with psycopg.connect(URL, autocommit=True) as admin:
        for _ in range(100):
            if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
                return
            time.sleep(0.05)
    raise AssertionError(f"server process {pid} did not end")


def test_a_connection_broken_moments_after_its_last_loan_is_replaced_too(pool, monkeypatch):
    """A restart under load ends every pooled connection within the window: its socket says so, no query."""
    monkeypatch.setattr(env, "POOL_CHECK_IDLE_S", 60.0)  # every loan below is inside the window
    with pool.connection() as connection:
        broken = backend_of(connection)
    terminate(broken)
    gone(broken)
    with pool.connection() as connection:
        assert backend_of(connection) != broken


def test_a_connection_lent_moments_ago_is_lent_again_without_a_check(pool, monkeypatch):
    monkeypatch.setattr(env, "POOL_CHECK_IDLE_S", 60.0)  # a slow machine must not leave the window between loans
    with pool.connection() as connection:
        connection.execute("SELECT 1")
    queries: list[str] = []
    [idle] = pool._pool
    original = idle.execute

    def counting(query, *args, **kwargs):
        queries.append(str(query))
        return original(query, *args, **kwargs)

    idle.execute = counting
    with pool.connection() as connection:
        assert connection is idle
    assert queries == []  # no check round trip for a connection lent within the window
    setattr(idle, env._LENT_AT, getattr(idle, env._LENT_AT) - env.POOL_CHECK_IDLE_S - 0.1)
    with pool.connection() as connection:
        assert connection is idle
    assert queries == [""]  # past the window: psycopg_pool's check, an empty query


def test_a_new_connection_is_checked_on_its_first_loan():
    connection = psycopg.connect(URL, autocommit=True)
    try:
        terminate(backend_of(connection))
        with pytest.raises(psycopg.OperationalError):
            env.check_if_idle(connection)  # never lent: no time noted, so checked
    finally:
        connection.close()
