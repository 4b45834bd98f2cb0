"""Writes of the access app: audit events, API keys, the personal-mode user."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import ipaddress
import json
import os
import queue
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _

from access.audit import CANONICAL, GENESIS, KEYED, Anchor, event_hash, hashed_fields, storable
from access.models import ApiKey, AuditEvent, User

# Any constant works; it only has to be the same in every process.
_AUDIT_LOCK_KEY = 0x434149524E  # "CAIRN"

PERSONAL_USERNAME = "me"


@dataclass(frozen=True)
class Actor:
    """Who did something, as recorded in the audit log."""

    user: User | None
    api_key_prefix: str = ""
    ip: str | None = None
    request_id: str = ""

    @property
    def label(self) -> str:
        if self.user is None:
            return "system"
        return self.user.get_username()


SYSTEM = Actor(user=None)


def signed_in_user(request: HttpRequest) -> User:
    """The user of a request to a view that requires signing in (DRF ``IsAuthenticated``, ``login_required``).

    Those views never run for an anonymous visitor; this says so to the type
    checker, and refuses one (403) should it ever happen.
    """
    user = getattr(request, "user", None)
    if not isinstance(user, User):
        raise PermissionDenied(_("Sign in first."))
    return user


def actor_from_request(request: Any) -> Actor:
    user = getattr(request, "user", None)
    auth = getattr(request, "auth", None)
    return Actor(
        user=user if getattr(user, "is_authenticated", False) else None,
        api_key_prefix=auth.prefix if isinstance(auth, ApiKey) else "",
        ip=request.META.get("REMOTE_ADDR") or None,
        request_id=getattr(request, "request_id", ""),
    )


def audit_record(
    *,
    actor: Actor,
    action: str,
    target_type: str = "",
    target_id: object = "",
    outcome: str = AuditEvent.Outcome.ALLOWED,
    rule: str = "",
    detail: dict[str, Any] | None = None,
    _link_if_empty: str = GENESIS,
) -> AuditEvent:
    """Append one event to the hash-chained audit log.  Never put secrets in ``detail``: only ids.

    Lock-free: read the head, hash onto it, insert.  Every event has at most
    one successor (a unique constraint on ``prev_hash``), so when two writers
    hashed onto the same head, one insert fails and that writer reads the new
    head and tries again.  An event is therefore always inserted after its
    predecessor committed, so its id is larger and the chain runs in id
    order.  Two round trips per event instead of a lock held across five:
    under load every API request writes one or two events, and a global lock
    made them queue.

    In a web process (``audit_group_commit``) an event written outside a
    transaction goes through the process's one appender thread instead,
    which writes every event waiting at that moment in one statement; the
    call returns once its event is committed, as before.
    """
    fields: dict[str, Any] = {"actor": actor, "action": action, "target_type": target_type, "target_id": target_id,
              "outcome": outcome, "rule": rule, "detail": detail}
    appender = _group_appender
    if appender is not None and _link_if_empty == GENESIS and not connection.in_atomic_block:
        event = appender.append(_audit_event(**fields, previous=None))  # chained and hashed by the appender
        _request_key_use_covered(actor)
        return event
    for attempt in range(_APPEND_ATTEMPTS):
        previous = _audit_head() or _link_if_empty
        event = _audit_event(**fields, previous=previous)
        try:
            if connection.in_atomic_block:
                with transaction.atomic():  # a savepoint: a lost race must not abort the caller's transaction
                    event.save()
            else:
                event.save()  # one INSERT, atomic by itself
            _request_key_use_covered(actor)
            return event
        except IntegrityError:
            _lost_race_pause(attempt)
    raise RuntimeError(f"could not append to the audit log after {_APPEND_ATTEMPTS} attempts")


def _audit_head() -> str | None:
    """The newest event's hash (None: the log is empty)."""
    return AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()


def _lost_race_pause(attempt: int) -> None:
    if attempt >= 3:
        time.sleep(random.uniform(0, 0.002 * attempt))  # many writers at once: spread them out


class _GroupAppender:
    """One thread of a process that appends that process's events, all those waiting at once (group commit).

    Under load, every request of a web process writes an audit event, and
    each lock-free append costs a read of the head and an insert; requests
    of one process that append at the same moment lose races to each other
    and retry (py-spy of a web worker at 50 users: 16.5 % of its samples in
    the audit append).  Here a request hands its event over and waits: the
    thread reads the head once, chains every waiting event onto it in order
    and inserts them in one statement outside a transaction — so a process never
    races itself, and the busier it is the more events share a round trip.
    Races with other processes remain and are retried as before (the unique
    ``prev_hash`` and the head trigger refuse a batch that lost one, whole).

    An error (the database away) is raised in every request of the batch
    (an error of one event alone — a value the column refuses — only in
    that request: the batch is then written event by event), and the
    thread's connection is closed so the next batch opens a new one.

    The thread has a connection of its own, outside the web process's pool:
    the requests waiting for it each hold a pooled connection, so an
    appender that borrowed from the same pool could wait behind them until
    the pool's timeout.  It is kept while busy and closed after
    ``IDLE_CLOSE_S`` seconds without events.
    """

    MAX_BATCH = 256
    IDLE_CLOSE_S = 30.0

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_PendingEvent] = queue.SimpleQueue()
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._db: Any = None  # the thread's own DatabaseWrapper (made in the thread)
        self.batches = 0  # how many statements wrote the events so far (for tests and benchmarks)
        self.events = 0

    def append(self, event: AuditEvent) -> AuditEvent:
        pending = _PendingEvent(event)
        self._ensure_thread()
        self._queue.put(pending)
        while not pending.done.wait(timeout=1.0):
            self._ensure_thread()  # should the thread ever have died, a new one takes the queue over
        if pending.error is not None:
            try:  # each waiting request raises its own copy (the same class: a 503 stays a 503)
                error = copy.copy(pending.error)
            except Exception:  # noqa: BLE001 (an exception that cannot be copied is raised as it is)
                raise pending.error from None
            # The driver's error stays the cause (kb.api.errors reads its SQLSTATE: "not migrated" is a 503).
            raise error from pending.error.__cause__
        return event

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._start:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                if self._pid != os.getpid():  # a forked child: the parent's thread and queue are not here
                    self._queue = queue.SimpleQueue()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="cairn-audit-appender", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.IDLE_CLOSE_S)
            except queue.Empty:
                self._close()
                continue
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write_batch(batch)
            finally:
                for pending in batch:
                    pending.done.set()

    def _write_batch(self, batch: list[_PendingEvent]) -> None:
        try:
            self._write([p.event for p in batch])
            return
        except BaseException as exc:  # handed to the requests; the thread goes on
            error: BaseException = exc
        self._close()
        if len(batch) > 1 and not isinstance(error, OperationalError | InterfaceError):
            for pending in batch:  # not the database away: find the one event it refuses
                self._write_batch([pending])
            return
        for pending in batch:
            pending.error = error

    def _close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except Exception:  # noqa: BLE001 (a broken connection may fail to close; it is dropped)
                pass

    def _connection(self) -> Any:
        """The thread's own connection: the default database's settings without the pool."""
        if self._db is None:
            from django.db import connections

            default = connections["default"]
            options = {k: v for k, v in default.settings_dict["OPTIONS"].items() if k != "pool"}
            self._db = type(default)({**default.settings_dict, "OPTIONS": options}, "default")
        return self._db

    def _write(self, events: list[AuditEvent]) -> None:
        db = self._connection()
        key = audit_key()
        table = db.ops.quote_name(AuditEvent._meta.db_table)
        for attempt in range(_APPEND_ATTEMPTS):
            with db.cursor() as cursor:
                cursor.execute(f"SELECT hash FROM {table} ORDER BY id DESC LIMIT 1")  # noqa: S608 (a model's table)
                row = cursor.fetchone()
            previous = row[0] if row else GENESIS
            for event in events:
                event.prev_hash = previous
                event.hash = event_hash(previous, hashed_fields(event), scheme=event.scheme, key=key)
                previous = event.hash
            try:
                _insert_in_order(events, db)
                self.batches += 1
                self.events += len(events)
                return
            except IntegrityError as exc:
                if getattr(exc.__cause__, "sqlstate", None) != _UNIQUE_VIOLATION:
                    raise  # not a lost race (that is the unique prev_hash or the head trigger)
                _lost_race_pause(attempt)
        raise RuntimeError(f"could not append to the audit log after {_APPEND_ATTEMPTS} attempts")


_UNIQUE_VIOLATION = "23505"


def _insert_in_order(events: list[AuditEvent], own: Any) -> None:
    """One multi-row ``INSERT … RETURNING id``, outside a transaction: atomic by itself, one round trip.

    (``bulk_create`` would add a BEGIN and a COMMIT round trip; under load each round trip is also a wait
    for the interpreter lock.)  PostgreSQL numbers the rows in the order given, so the chain runs in id
    order, and the head trigger checks each row against the one before it in the same statement.
    """
    fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
    quote = own.ops.quote_name
    columns = ", ".join(quote(f.attname if f.column is None else f.column) for f in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (f"INSERT INTO {quote(AuditEvent._meta.db_table)} ({columns}) "
           f"VALUES {', '.join([row] * len(events))} RETURNING {quote('id')}")
    params = [f.get_db_prep_save(f.pre_save(event, True), own) for event in events for f in fields]
    with own.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [r[0] for r in cursor.fetchall()]
    for event, pk in zip(events, ids, strict=True):
        event.pk = pk
        event._state.adding = False
        event._state.db = own.alias


@dataclass
class _PendingEvent:
    event: AuditEvent
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


_group_appender: _GroupAppender | None = None


def audit_group_commit(enabled: bool = True) -> None:
    """Append this process's events outside transactions through one appender thread (web processes).

    PostgreSQL only: SQLite (personal mode) has one writer at a time anyway.
    """
    global _group_appender
    if not enabled or connection.vendor != "postgresql":
        _group_appender = None
    elif _group_appender is None:
        _group_appender = _GroupAppender()


_APPEND_ATTEMPTS = 200


def _audit_event(*, actor: Actor, action: str, target_type: str, target_id: object, outcome: str, rule: str,
                 detail: dict[str, Any] | None, previous: str | None) -> AuditEvent:
    event = AuditEvent(
        at=timezone.now(),
        actor=actor.user,
        actor_label=actor.label[:200],
        api_key_prefix=actor.api_key_prefix,
        ip=stored_ip(actor.ip),
        request_id=actor.request_id[:64],
        action=action,
        target_type=target_type,
        target_id=str(target_id)[:64],
        outcome=outcome,
        rule=rule[:500],
        detail=storable(detail or {}),
        prev_hash=previous or "",
        scheme=KEYED if settings.CAIRN_AUDIT_KEY else CANONICAL,
    )
    if previous is not None:  # None: the group appender links and hashes it
        event.hash = event_hash(previous, hashed_fields(event), scheme=event.scheme, key=audit_key())
    return event


def stored_ip(ip: str | None) -> str | None:
    """A client address in the form PostgreSQL's ``inet`` gives it back, so the hash covers what is stored.

    IPv6 as ``inet_ntop`` writes it (``::ffff:1.2.3.4``, not Python's ``::ffff:102:304``; lower case,
    compressed), which is PostgreSQL's output too; a verification reads the stored form.  Anything that
    does not parse is kept as given.
    """
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6 and not getattr(address, "scope_id", None):
        return socket.inet_ntop(socket.AF_INET6, address.packed)
    return str(address)


def audit_key() -> bytes | None:
    """The key of the keyed chain (``CAIRN_AUDIT_KEY_FILE``: kept outside the database), if one is set."""
    key = settings.CAIRN_AUDIT_KEY
    return key.encode("utf-8") if key else None


@dataclass(frozen=True)
class AnchorResult:
    written: bool
    id: int | None
    hash: str


def audit_anchor_write() -> AnchorResult:
    """Append the chain's head (id and hash) to ``CAIRN_AUDIT_ANCHOR_FILE``, outside the database.

    Rewriting every event after an anchored one — what a database superuser
    could do, recomputing each hash — then no longer matches the file
    (``cairn_audit_verify``).  Append-only and fsynced; a head already
    anchored is not written again.  Idempotent; a no-op without the setting.
    """
    path = settings.CAIRN_AUDIT_ANCHOR_FILE
    head = AuditEvent.objects.order_by("-id").values("id", "hash").first()
    if not path or head is None:
        return AnchorResult(False, None, "")
    anchors = audit_anchors_read()
    if anchors and anchors[-1].id == head["id"] and anchors[-1].hash == head["hash"]:
        return AnchorResult(False, head["id"], head["hash"])
    line = json.dumps({"id": head["id"], "hash": head["hash"], "written_at": timezone.now().isoformat()})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, (line + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return AnchorResult(True, head["id"], head["hash"])


def audit_anchors_read() -> list[Anchor]:
    """Every anchor in ``CAIRN_AUDIT_ANCHOR_FILE`` (none without the setting or the file).

    A line that is not an anchor is itself a finding: it is returned as an
    anchor that can match no event, so verification reports it.
    """
    path = settings.CAIRN_AUDIT_ANCHOR_FILE
    if not path or not os.path.exists(path):
        return []
    anchors: list[Anchor] = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                anchors.append(Anchor(int(data["id"]), str(data["hash"]), str(data.get("written_at", ""))))
            except (ValueError, KeyError, TypeError):
                anchors.append(Anchor(-number, "unreadable", f"line {number} of the anchor file"))
    return anchors


KEY_PREFIX = "cairn_"


def _key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def api_key_create(*, user: User, name: str, actor: Actor, read_only: bool = False,
                   collection_ids: list[int] | None = None,
                   expires_at: dt.datetime | None = None) -> tuple[ApiKey, str]:
    """Create a key; returns it and the secret, which is shown once and never stored.

    ``read_only``: it can search and ask, not change anything; ``collection_ids``: it sees only
    those collections (of the ones its user may read); ``expires_at``: refused after that time.
    """
    prefix = secrets.token_hex(4)
    secret = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(user=user, name=name[:100], prefix=prefix, key_hash=_key_hash(secret),
                                read_only=read_only, collection_ids=collection_ids, expires_at=expires_at)
    audit_record(actor=actor, action="api_key.create", target_type="api_key", target_id=prefix,
                 detail={"user_id": user.pk, "name": key.name, "read_only": read_only,
                         "collection_ids": collection_ids,
                         "expires_at": expires_at.isoformat() if expires_at else None})
    return key, secret


def api_key_revoke(*, actor: Actor, key: ApiKey) -> bool:
    """Revoke ``key`` now (its next request is refused); False when it was revoked already."""
    with transaction.atomic():
        revoked = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if revoked:
            audit_record(actor=actor, action="api_key.revoke", target_type="api_key", target_id=key.prefix,
                         detail={"user_id": key.user_id, "name": key.name})
    key.refresh_from_db(fields=["revoked_at"])
    return bool(revoked)


def api_key_prefix_of(token: str) -> str:
    """The key id part of a presented token (``cairn_<prefix>_…``), or "" when it has none.

    Safe to log: the prefix identifies a key and is shown in key lists; the
    rest of the token is the secret and never leaves this module.
    """
    match = _TOKEN_PREFIX.match(token)
    return match.group(1) if match else ""


_TOKEN_PREFIX = re.compile(rf"^{KEY_PREFIX}([0-9a-f]{{8}})_")


def api_key_use_record(*, key: ApiKey, request: Any) -> None:
    """Log one use of an API key, at most once per request (DRF may authenticate twice).

    Inside a request (``request_audit_scope``, opened by the request-id
    middleware) the record is deferred to the end of the request and written
    only when the request logged nothing else under this key: a search or an
    ask already records its own event with the key's prefix, and a second row
    per request doubled the audit writes of every API call.  Outside one
    (a direct call) it is written at once.
    """
    underlying = getattr(request, "_request", request)
    if getattr(underlying, "_cairn_api_key_logged", None) == key.pk:
        return
    underlying._cairn_api_key_logged = key.pk
    actor = Actor(user=key.user, api_key_prefix=key.prefix, ip=underlying.META.get("REMOTE_ADDR") or None,
                  request_id=getattr(underlying, "request_id", ""))
    detail = {"method": underlying.method, "path": underlying.path[:300]}
    scope = _request_audit.get()
    if scope is not None and actor.request_id and scope.request_id == actor.request_id:
        scope.key_use = (actor, detail)
        return
    _api_key_use_write(actor, detail)


def _api_key_use_write(actor: Actor, detail: dict[str, Any]) -> None:
    audit_record(actor=actor, action="api_key.use", target_type="api_key", target_id=actor.api_key_prefix,
                 detail=detail)


@dataclass
class _RequestAudit:
    request_id: str
    key_use: tuple[Actor, dict[str, Any]] | None = None
    keys_recorded: set[str] = field(default_factory=set)  # key prefixes this request's events carry


_request_audit: ContextVar[_RequestAudit | None] = ContextVar("cairn_request_audit", default=None)


def _request_key_use_covered(actor: Actor) -> None:
    """Note that this request logged an event under its API key (so no separate ``api_key.use`` row)."""
    scope = _request_audit.get()
    if scope is not None and actor.api_key_prefix and actor.request_id == scope.request_id:
        # Counts only once committed: a rolled-back event must not stand in for the key's use.
        prefix = actor.api_key_prefix
        transaction.on_commit(lambda: scope.keys_recorded.add(prefix))


@contextmanager
def request_audit_scope(request_id: str) -> Iterator[None]:
    """One request's audit bookkeeping: at its end, the deferred API-key use is written if still needed.

    Written also when the request failed (the key was used); a streamed
    answer that logs its own event only when the stream ends still gets its
    use row here, as the scope closes when the response starts.
    """
    scope = _RequestAudit(request_id=request_id)
    token = _request_audit.set(scope)
    try:
        yield
    finally:
        _request_audit.reset(token)
        if scope.key_use is not None:
            actor, detail = scope.key_use
            if actor.api_key_prefix not in scope.keys_recorded:
                _api_key_use_write(actor, detail)


def api_key_rejected_record(*, token: str, request: Any) -> None:
    """Log a refused bearer token by its key id only (never the token)."""
    underlying = getattr(request, "_request", request)
    audit_record(
        actor=Actor(user=None, ip=underlying.META.get("REMOTE_ADDR") or None,
                    request_id=getattr(underlying, "request_id", "")),
        action="api_key.use", target_type="api_key", target_id=api_key_prefix_of(token),
        outcome=AuditEvent.Outcome.DENIED, rule="unknown, revoked or inactive API key",
        detail={"method": underlying.method, "path": underlying.path[:300]},
    )


def access_denied_record(*, actor: Actor, target_type: str, target_id: object = "", rule: str,
                         detail: dict[str, Any] | None = None) -> AuditEvent | None:
    """Log a refused access (the caller then answers 404, so ids cannot be probed).

    One denial event per request: when a deeper layer already logged this
    request's refusal (same request id), the edge does not log it twice.
    """
    if actor.request_id:
        # Only recent rows can belong to this request: a primary-key range, not a table scan.
        newest = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        if AuditEvent.objects.filter(
            id__gt=newest - 500, request_id=actor.request_id[:64], outcome=AuditEvent.Outcome.DENIED
        ).exists():
            return None
    return audit_record(actor=actor, action="access.denied", target_type=target_type, target_id=target_id,
                        outcome=AuditEvent.Outcome.DENIED, rule=rule, detail=detail)


def api_key_authenticate(secret: str) -> ApiKey | None:
    if not secret.startswith(KEY_PREFIX):
        return None
    key = (
        ApiKey.objects.select_related("user")
        .filter(key_hash=_key_hash(secret), revoked_at__isnull=True, user__is_active=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .first()
    )
    if key is not None:
        now = timezone.now()
        # To the minute: a write per request would cost every API call a database write (each
        # use is in the audit log anyway, with its time).
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
    return key


LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


# --- retention -------------------------------------------------------------------------

RETENTION_ACTION = "audit.retention"


@dataclass(frozen=True)
class RetentionResult:
    removed: int
    cutoff: dt.datetime | None       # events older than this were eligible; None: kept forever
    through_id: int | None           # the last removed event
    anchor_hash: str                 # what the oldest remaining event links to
    event: AuditEvent | None


def retention_cutoff(now: dt.datetime, years: int) -> dt.datetime:
    """``now`` minus whole calendar years (29 February becomes 28 February)."""
    try:
        return now.replace(year=now.year - years)
    except ValueError:
        return now.replace(year=now.year - years, day=28)


def audit_retention_purge(*, now: dt.datetime | None = None, years: int | None = None) -> RetentionResult:
    """Delete audit events older than the retention period; the one path that may remove them.

    Removes a *prefix* of the chain (every event before the first one still
    inside the retention period), so the rest stays one unbroken chain.  The
    hash of the last removed event becomes the anchor the oldest remaining
    event links to; it is written into the ``audit.retention`` event this
    function appends (inside the chain, so it cannot be changed unnoticed),
    which is where ``cairn_audit_verify`` finds it.

    On PostgreSQL the append-only trigger lets a DELETE through only inside
    this transaction, and only for ids up to the one named in
    ``cairn.audit_purge_through`` (a transaction-local setting).  Idempotent:
    a second run in a row removes nothing and records that.
    """
    years = settings.CAIRN_AUDIT_RETENTION_YEARS if years is None else years
    now = now or timezone.now()
    if years <= 0:
        return RetentionResult(0, None, None, "", None)
    cutoff = retention_cutoff(now, years)
    with transaction.atomic():
        _audit_lock()
        first_kept = AuditEvent.objects.filter(at__gte=cutoff).order_by("id").values_list("id", flat=True).first()
        newest = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
        through_id = (first_kept - 1) if first_kept is not None else newest
        removed = 0
        anchor = ""
        if through_id is not None:
            last_removed = (
                AuditEvent.objects.filter(id__lte=through_id).order_by("-id").values_list("hash", flat=True).first()
            )
            if last_removed is not None:
                anchor = last_removed
                with connection.cursor() as cursor:
                    if connection.vendor == "postgresql":
                        cursor.execute("SELECT set_config('cairn.audit_purge_through', %s, true)", [str(through_id)])
                    cursor.execute("DELETE FROM access_auditevent WHERE id <= %s", [through_id])
                    removed = cursor.rowcount
                    if connection.vendor == "postgresql":
                        cursor.execute("SELECT set_config('cairn.audit_purge_through', '', true)")
        # Nothing removed: no new anchor.  (Copying the oldest row's link
        # here would bless a prefix someone removed behind our back.)
        event = audit_record(
            actor=SYSTEM, action=RETENTION_ACTION, target_type="audit_log",
            detail={
                "removed": removed, "retention_years": years, "cutoff": cutoff.isoformat(),
                "through_id": through_id if removed else None, "anchor_hash": anchor,
            },
            _link_if_empty=anchor or GENESIS,  # everything was removed: still link to the last one
        )
    return RetentionResult(removed, cutoff, through_id if removed else None, anchor, event)


def _audit_lock() -> None:
    """One retention purge at a time (appends take no lock: see ``audit_record``)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_AUDIT_LOCK_KEY])


def personal_user() -> User:
    """The one owner of a personal-mode installation (created on first use)."""
    user, created = User.objects.get_or_create(
        username=PERSONAL_USERNAME,
        defaults={"role": User.Role.ADMIN, "is_staff": True, "is_superuser": True},
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user
