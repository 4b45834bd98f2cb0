"""The hash chain of the audit log: how a row is hashed and how a chain is verified.

Each row's hash covers the previous row's hash and the row's fields.  How
the fields are serialised is the row's ``scheme``:

* ``sha256`` — rows written before the canonical form: ``json.dumps`` of the
  fields.  A number's text could change on the database's round trip (on
  PostgreSQL jsonb gives ``1e308`` back as a 309-digit integer), so such a
  row could look edited when nobody touched it.
* ``sha256-c14n`` — SHA-256 over the canonical form (``canonical_json``):
  every number written as its exact decimal value, normalised, so ``1e308``,
  ``1E+308`` and the 309-digit integer are the same text; keys sorted; no
  whitespace.  What comes back from either database hashes as it went in.
* ``hmac-sha256-c14n`` — the same bytes through HMAC-SHA256 with a key kept
  outside the database (``CAIRN_AUDIT_KEY_FILE``): a database superuser who
  rewrites rows cannot recompute their hashes.

``verify_chain`` reports every broken link, not only the first: a false
alarm early on must not hide real tampering further on.  Anchors — the head
hash written now and then to a file outside the database
(``CAIRN_AUDIT_ANCHOR_FILE``) — must still match their rows, so rewriting
every row after some point is found as well.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

GENESIS = "0" * 64
LEGACY = "sha256"
CANONICAL = "sha256-c14n"
KEYED = "hmac-sha256-c14n"
SCHEMES = (LEGACY, CANONICAL, KEYED)


def _number(value: int | float) -> str:
    """A number as its exact decimal value, normalised: the same text whatever type or notation carried it."""
    if type(value) is int:
        return str(value)
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    text = format(exact.normalize(), "f")
    return "0" if text == "-0" else text


def canonical_json(value: Any) -> str:
    """The canonical serialisation hashed by the ``-c14n`` schemes (see the module docstring)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return json.dumps(str(value))
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(item) for item in value) + "]"
    if isinstance(value, dict):
        items = sorted((str(key), item) for key, item in value.items())
        return "{" + ",".join(f"{json.dumps(key, ensure_ascii=False)}:{canonical_json(item)}"
                              for key, item in items) + "}"
    return json.dumps(str(value), ensure_ascii=False)


def storable(value: Any) -> Any:
    """A detail value both databases store and give back unchanged in meaning.

    NUL characters (which PostgreSQL refuses in text and jsonb) become U+FFFD,
    non-finite floats and other objects their text.
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    if isinstance(value, dict):
        return {storable(str(key)): storable(item) for key, item in value.items()}
    return storable(str(value))


def event_hash(prev_hash: str, fields: dict[str, Any], *, scheme: str = LEGACY, key: bytes | None = None) -> str:
    """The hash of one row under ``scheme``; the keyed scheme needs ``key``."""
    if scheme == LEGACY:
        payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256((prev_hash + "\n" + payload).encode("utf-8")).hexdigest()
    message = (prev_hash + "\n" + canonical_json(fields)).encode("utf-8")
    if scheme == CANONICAL:
        return hashlib.sha256(message).hexdigest()
    if scheme == KEYED:
        if not key:
            raise ValueError("the keyed scheme needs the audit key (CAIRN_AUDIT_KEY_FILE)")
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    raise ValueError(f"unknown audit hash scheme {scheme!r}")


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
class Broken:
    id: int
    reason: str


@dataclass(frozen=True)
class ChainReport:
    checked: int
    broken: tuple[Broken, ...] = ()
    unverified: int = 0            # keyed rows checked without the key: linked, not proven unedited
    anchors_checked: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.broken

    @property
    def first_broken_id(self) -> int | None:
        return self.broken[0].id if self.broken else None

    @property
    def reason(self) -> str:
        return self.broken[0].reason if self.broken else ""


@dataclass(frozen=True)
class Anchor:
    """A head of the chain written outside the database: event ``id`` had ``hash`` at ``written_at``."""

    id: int
    hash: str
    written_at: str = ""


def verify_chain(
    rows: Iterable[Mapping[str, Any]], *, anchors: Iterable[str] = (), key: bytes | None = None,
    heads: Iterable[Anchor] = (),
) -> ChainReport:
    """Walk rows in id order and report every broken link, edited row and anchor that no longer matches.

    ``anchors`` are the hashes retention purges left behind (the hash of the
    last event each purge removed, recorded in its ``audit.retention``
    event): the oldest remaining row may link to one of them instead of to
    the genesis.  Every later row must link to the row just before it.
    ``heads``: anchors from the anchor file; each must match its row, unless
    retention has removed that row since.  Once a keyed row appears, every
    later row must be keyed too: re-hashing rows without the key (as someone
    who rewrites the table could) is a downgrade, reported as such.
    """
    allowed_first = {GENESIS, *(a for a in anchors if a)}
    wanted = {head.id: head for head in heads}
    seen_heads: dict[int, str] = {}
    broken: list[Broken] = []
    previous: str | None = None
    first_id: int | None = None
    checked = unverified = 0
    keyed_seen = False
    for row in rows:
        checked += 1
        if previous is None:
            first_id = row["id"]
            if row["prev_hash"] not in allowed_first:
                broken.append(Broken(row["id"], "the oldest row links to neither the start of the log nor a "
                                                "retention checkpoint (rows were removed from the start)"))
        elif row["prev_hash"] != previous:
            broken.append(Broken(row["id"], "its prev_hash does not match the previous row "
                                            "(a row was removed or inserted)"))
        scheme = row.get("scheme") or LEGACY
        if keyed_seen and scheme != KEYED:
            broken.append(Broken(row["id"], "it is not keyed although earlier events are "
                                            "(the chain was re-hashed without the key)"))
        keyed_seen = keyed_seen or scheme == KEYED
        if scheme == KEYED and not key:
            unverified += 1
        elif event_hash(row["prev_hash"], hashed_fields(row), scheme=scheme, key=key) != row["hash"]:
            broken.append(Broken(row["id"], "its content does not match its hash (the row was edited)"))
        if row["id"] in wanted:
            seen_heads[row["id"]] = row["hash"]
        previous = row["hash"]
    notes: list[str] = []
    for head in sorted(wanted.values(), key=lambda h: h.id):
        if head.id in seen_heads:
            if seen_heads[head.id] != head.hash:
                broken.append(Broken(head.id, f"its hash differs from the anchor written at {head.written_at or '?'}"
                                              " (the chain was rewritten from here on)"))
        elif first_id is not None and head.id < first_id:
            notes.append(f"anchor of event {head.id} predates the oldest remaining event (retention)")
        else:
            broken.append(Broken(head.id, f"the event anchored at {head.written_at or '?'} is missing"))
    if unverified:
        notes.append(f"{unverified} keyed events were linked but not checked: set CAIRN_AUDIT_KEY_FILE to prove them")
    return ChainReport(checked, tuple(sorted(broken, key=lambda b: b.id)), unverified, len(wanted), tuple(notes))
