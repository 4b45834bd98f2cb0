"""Readable chunk ranges, kept between searches while the documents table is unchanged (SQLite).

Every search turns the asking user's read decision into the chunk-id
ranges of the documents it may read (``selectors.searchable_ranges``): one
scan of a covering index, ~5 ms for 10k documents, on every request.  The
decision itself (grants, policies, the user's attributes) is still made
per request; what is kept here is only the *answer of that one query over
``kb_document``*, keyed by its exact SQL and parameters, so two requests
share an entry only when they would run the very same query.

An entry is valid for one **generation** of the documents table: a row of
``kb_generation`` that triggers on ``kb_document`` bump inside the writing
transaction, on every insert, update and delete, whoever writes (the ORM,
``QuerySet.update``, raw SQL, another process).  A search reads the
generation (one indexed row, ~0.1 ms) before the ranges; a cached entry of
another generation is never used, so a revoked, deleted or re-labelled
document drops out of the very next search, as before.

What keeps this safe:

* The generation is read in the same statement as a check that all three
  triggers exist.  Django rebuilds a SQLite table for some migrations,
  which drops its triggers; until they are re-created (``install``, run by
  every ``migrate``) searches bypass the cache rather than trust it.
  ``install`` also bumps the generation, since writes in between were not
  counted.
* The row carries a random token, re-drawn when the row is re-created, so a
  table emptied and refilled (a test database flush, a restore) cannot
  reach an old entry's (token, value) again.
* Reads inside a transaction bypass the cache: they may see their own
  uncommitted writes, and a rolled-back write leaves the generation where
  it was.  Outside one, each statement reads the latest commit, and the
  generation is read *before* the ranges, so an entry can only be newer
  than its generation, never older.
* Only queries over ``kb_document`` alone are cached (a policy that joined
  another table would bypass), and entries are read-only arrays.

PostgreSQL reads the ranges on every search: there, a counter row bumped by
every writer would serialise concurrent ingestion and can deadlock
multi-document transactions, and its covering index and shared buffers make
the query cheap enough.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from django.db.backends.base.base import BaseDatabaseWrapper

TABLE = "kb_generation"
NAME = "document"
WATCHED = "kb_document"
TRIGGERS = {
    "kb_document_generation_insert": "AFTER INSERT",
    "kb_document_generation_update": "AFTER UPDATE",
    "kb_document_generation_delete": "AFTER DELETE",
}
_BUMP = (
    f"INSERT INTO {TABLE} (name, value, token) VALUES ('{NAME}', 1, lower(hex(randomblob(8)))) "
    "ON CONFLICT(name) DO UPDATE SET value = value + 1"
)
# The generation, only when every trigger is in place (no row otherwise).
_READ = (
    f"SELECT value, token FROM {TABLE} WHERE name = '{NAME}' AND "
    f"(SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = '{WATCHED}' "
    f"AND name IN ({', '.join(repr(name) for name in TRIGGERS)})) = {len(TRIGGERS)}"
)

Generation = tuple[int, str]


def supported(connection: BaseDatabaseWrapper) -> bool:
    return connection.vendor == "sqlite"


def install(connection: BaseDatabaseWrapper) -> None:
    """Create the generation table and the triggers where missing, and bump the generation.

    Idempotent; run by the migration that introduced it and after every
    ``migrate`` (a table rebuild drops triggers).  A no-op off SQLite.
    """
    if not supported(connection):
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} "
            "(name varchar(32) NOT NULL PRIMARY KEY, value integer NOT NULL, token varchar(32) NOT NULL)"
        )
        for trigger, when in TRIGGERS.items():
            cursor.execute(f"CREATE TRIGGER IF NOT EXISTS {trigger} {when} ON {WATCHED} BEGIN {_BUMP}; END")
        cursor.execute(_BUMP)


def generation(connection: BaseDatabaseWrapper) -> Generation | None:
    """The documents table's generation; None when it cannot be trusted (or off SQLite)."""
    if not supported(connection) or connection.in_atomic_block:
        return None
    with connection.cursor() as cursor:
        cursor.execute(_READ)
        row = cursor.fetchone()
    return (int(row[0]), str(row[1])) if row else None


class RangeCache:
    """Least-recently-used ``(n, 2)`` range arrays by (database, SQL, parameters), within a byte budget."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[Any, ...], tuple[Generation, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, connection: BaseDatabaseWrapper, sql: str, params: tuple[Any, ...],
            fetch: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array for this query at the current generation, else ``fetch()`` (and keep it)."""
        current = generation(connection)
        if current is None:
            return fetch()
        key = (connection.alias, str(connection.settings_dict.get("NAME")), sql, params)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == current:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
        self.misses += 1
        ranges = fetch()  # read after the generation: at least as new as it
        ranges.flags.writeable = False
        cost = _cost(key, ranges)
        if cost <= self.max_bytes:
            with self._lock:
                old = self._entries.pop(key, None)
                if old is not None:
                    self._bytes -= _cost(key, old[1])
                self._entries[key] = (current, ranges)
                self._bytes += cost
                while self._bytes > self.max_bytes:
                    dropped_key, (_, dropped) = self._entries.popitem(last=False)
                    self._bytes -= _cost(dropped_key, dropped)
        return ranges

    @property
    def bytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


def _cost(key: tuple[Any, ...], ranges: np.ndarray) -> int:
    """What an entry holds: the array, and the key's SQL and parameters (many small entries add up)."""
    return ranges.nbytes + len(key[2]) + 32 * len(key[3]) + 256
