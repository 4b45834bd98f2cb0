"""Whether this process can serve: the checks behind ``GET /readyz``.

Each check returns None when it passes, else one short sentence saying what
is wrong — written for an operator, and free of secrets: no URLs, no
passwords, no host names from the settings, only which dependency failed and
the exception's class.  Checks are cheap (a ``SELECT 1``, a ``PING``, a stat)
so a probe every few seconds costs nothing; the migration check remembers a
success, as applied migrations do not come undone.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from kb import index

_migrated = False


def _database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure at all means "not ready"; the class name says which
        return f"the database cannot be reached ({type(exc).__name__})"
    return None


def _migrations() -> str | None:
    global _migrated
    if _migrated:
        return None
    try:
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:
        return f"the applied migrations cannot be read ({type(exc).__name__})"
    if pending:
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in pending[:3])
        more = f" and {len(pending) - 3} more" if len(pending) > 3 else ""
        return f"{len(pending)} migrations are not applied ({names}{more}): run `manage.py migrate`"
    _migrated = True
    return None


def _redis() -> str | None:
    if settings.CAIRN_TASKS != "celery":
        return None
    import redis

    client = redis.Redis.from_url(settings.CAIRN_REDIS_URL or "", socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except Exception as exc:
        return f"Redis cannot be reached ({type(exc).__name__})"
    finally:
        client.close()
    return None


def _index() -> str | None:
    directory = index.index_dir()
    if not directory.exists():
        return None  # nothing indexed yet: the first write creates it
    if not os.access(directory, os.R_OK | os.X_OK):
        return "the index directory cannot be read by this process"
    try:
        store = index.index_store()
        version = store.current_version()
    except OSError as exc:
        return f"the index cannot be read ({type(exc).__name__})"
    if version and not os.access(store.version_dir(version), os.R_OK | os.X_OK):
        return f"the index's current version {version} is missing or unreadable"
    return None


CHECKS: dict[str, Callable[[], str | None]] = {
    "database": _database,
    "migrations": _migrations,
    "redis": _redis,
    "index": _index,
}


def readiness() -> dict[str, str]:
    """``{check: "ok" | what is wrong}`` for every check; the migration check is skipped without a database."""
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        if name == "migrations" and results.get("database", "ok") != "ok":
            results[name] = "not checked: the database cannot be reached"
            continue
        results[name] = check() or "ok"
    if settings.CAIRN_TASKS != "celery":
        results.pop("redis")
    return results
