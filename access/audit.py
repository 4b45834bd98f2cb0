"""The hash chain of the audit log: how a row is hashed and how a chain is verified."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


def event_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256((prev_hash + "\n" + payload).encode("utf-8")).hexdigest()


def hashed_fields(row: Any) -> dict[str, Any]:
    """The fields covered by the hash, from a model instance or values dict."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
    at = get("at")
    # The timestamp keeps microseconds, which both SQLite and PostgreSQL store.
    return {
        "at": at.timestamp() if at is not None else None,
        "actor_id": get("actor_id"),
        "actor_label": get("actor_label"),
        "api_key_prefix": get("api_key_prefix"),
        "ip": get("ip"),
        "request_id": get("request_id"),
        "action": get("action"),
        "target_type": get("target_type"),
        "target_id": get("target_id"),
        "outcome": get("outcome"),
        "rule": get("rule"),
        "detail": get("detail"),
    }


@dataclass(frozen=True)
class ChainReport:
    checked: int
    first_broken_id: int | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.first_broken_id is None


def verify_chain(rows: Iterable[dict[str, Any]], *, anchors: Iterable[str] = ()) -> ChainReport:
    """Walk rows in id order; report the first row whose link or content is wrong.

    ``anchors`` are the hashes retention purges left behind (the hash of the
    last event each purge removed, recorded in its ``audit.retention``
    event): the oldest remaining row may link to one of them instead of to
    the genesis.  Every later row must link to the row just before it.
    """
    allowed_first = {GENESIS, *(a for a in anchors if a)}
    previous: str | None = None
    checked = 0
    for row in rows:
        checked += 1
        if previous is None:
            if row["prev_hash"] not in allowed_first:
                return ChainReport(checked, row["id"], "the oldest row links to neither the start of the log "
                                   "nor a retention checkpoint (rows were removed from the start)")
        elif row["prev_hash"] != previous:
            return ChainReport(checked, row["id"], "its prev_hash does not match the previous row (a row was removed or inserted)")
        expected = event_hash(row["prev_hash"], hashed_fields(row))
        if expected != row["hash"]:
            return ChainReport(checked, row["id"], "its content does not match its hash (the row was edited)")
        previous = row["hash"]
    return ChainReport(checked, None, "")
