"""Reads of the audit log for its reviewers: who may review, filters, export formats, chain check.

Reviewing is for platform admins and auditors only; everyone else is told
the pages do not exist (and the attempt is itself logged by the caller).
Exports are streamed in id order with keyset batches, so a log of millions
of rows never sits in memory.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext as _

from access.audit import ChainReport, verify_chain
from access.models import AuditEvent, User

EXPORT_FIELDS = (
    "id", "at", "actor_id", "actor_label", "api_key_prefix", "ip", "request_id", "action",
    "target_type", "target_id", "outcome", "rule", "detail", "prev_hash", "hash", "scheme",
)
EXPORT_BATCH = 2000
_MAX_FILTER_CHARS = 200
# Spreadsheet programs run a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def can_review_audit(user: Any) -> bool:
    """Platform admins and auditors (and superusers); nobody else."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return bool(user.is_superuser or user.role in (User.Role.ADMIN, User.Role.AUDITOR))


class InvalidFilter(ValueError):
    """A filter value the reviewer typed is malformed; the message says which and why."""


@dataclass(frozen=True)
class AuditFilter:
    """What a reviewer narrowed the log to.  Empty fields do not filter."""

    actor: str = ""
    action: str = ""
    target: str = ""
    outcome: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AuditFilter:
        """Parse query parameters (``actor``, ``action``, ``target``, ``outcome``, ``since``, ``until``)."""
        values: dict[str, str] = {}
        for name in ("actor", "action", "target", "outcome", "since", "until"):
            value = str(params.get(name, "") or "").strip()
            if len(value) > _MAX_FILTER_CHARS:
                raise InvalidFilter(_("%(name)s: at most %(limit)s characters.") % {"name": name, "limit": _MAX_FILTER_CHARS})
            values[name] = value
        outcome = values["outcome"].lower()
        if outcome and outcome not in AuditEvent.Outcome.values:
            raise InvalidFilter(_("outcome: one of %(values)s.") % {"values": ", ".join(AuditEvent.Outcome.values)})
        since = _parse_time("since", values["since"], end_of_day=False)
        until = _parse_time("until", values["until"], end_of_day=True)
        if since and until and since >= until:
            raise InvalidFilter(_("since must be before until."))
        return cls(actor=values["actor"], action=values["action"], target=values["target"], outcome=outcome,
                   since=since, until=until)

    def as_params(self) -> dict[str, str]:
        """The filter as query parameters (for links to the next page and to exports)."""
        out = {key: value for key, value in asdict(self).items() if isinstance(value, str) and value}
        if self.since:
            out["since"] = self.since.isoformat()
        if self.until:
            out["until"] = self.until.isoformat()
        return out

    def apply(self, events: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        if self.actor:
            match = Q(actor_label__icontains=self.actor) | Q(api_key_prefix=self.actor)
            if self.actor.isdigit():
                match |= Q(actor_id=int(self.actor))
            events = events.filter(match)
        if self.action:
            # "kb." or "kb.*" selects a family of actions; otherwise the exact action.
            if self.action.endswith((".", "*")):
                events = events.filter(action__startswith=self.action.rstrip("*"))
            else:
                events = events.filter(action=self.action)
        if self.target:
            kind, sep, ident = self.target.partition(":")
            if sep:
                events = events.filter(target_type=kind, **({"target_id": ident} if ident else {}))
            else:
                events = events.filter(Q(target_type=self.target) | Q(target_id=self.target))
        if self.outcome:
            events = events.filter(outcome=self.outcome)
        if self.since:
            events = events.filter(at__gte=self.since)
        if self.until:
            events = events.filter(at__lt=self.until)
        return events


def _parse_time(name: str, value: str, *, end_of_day: bool) -> dt.datetime | None:
    """An ISO date (whole day) or date-time; a time without a zone is in the server's zone."""
    if not value:
        return None
    moment: dt.datetime | None = None
    day: dt.date | None = None
    try:
        # A bare date first: datetime.fromisoformat would read it as midnight.
        day = parse_date(value) if len(value) == 10 else None
        moment = None if day else parse_datetime(value)
    except ValueError:
        moment = day = None
    if moment is None and day is None:
        raise InvalidFilter(_("%(name)s: use a date (2026-01-31) or a date and time (2026-01-31T14:00).") % {"name": name})
    if moment is None:
        assert day is not None
        moment = dt.datetime.combine(day + dt.timedelta(days=1 if end_of_day else 0), dt.time())
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def audit_events(filters: AuditFilter) -> QuerySet[AuditEvent]:
    """Events matching ``filters``, newest first."""
    return filters.apply(AuditEvent.objects.all()).order_by("-id")


def audit_event_get(event_id: object) -> AuditEvent | None:
    try:
        pk = int(str(event_id))
    except (TypeError, ValueError):
        return None
    if not 0 < pk < 2**63:
        return None
    return AuditEvent.objects.filter(pk=pk).first()


def chunk_ids_served(event: AuditEvent) -> list[int]:
    """The chunk ids a search or answer event says it served (empty for other events)."""
    served = event.detail.get("chunks_served") if isinstance(event.detail, dict) else None
    if not isinstance(served, list):
        return []
    return [int(c) for c in served if isinstance(c, int) or (isinstance(c, str) and c.isdigit())]


def event_out(event: AuditEvent | Mapping[str, Any]) -> dict[str, Any]:
    """One event as plain JSON-ready data (the REST API and JSONL export share it)."""
    get = event.get if isinstance(event, Mapping) else (lambda name: getattr(event, name))
    out = {name: get(name) for name in EXPORT_FIELDS}
    out["at"] = out["at"].isoformat() if out["at"] is not None else None
    return out


# --- export ---------------------------------------------------------------------------


def export_bound(filters: AuditFilter) -> tuple[int, int]:
    """(highest id, row count) of the filtered set now, so later events (the export's own) stay out."""
    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    return last, filters.apply(AuditEvent.objects.filter(id__lte=last)).count()


def _batch(filters: AuditFilter, after: int, last: int) -> list[dict[str, Any]]:
    events = filters.apply(AuditEvent.objects.filter(id__gt=after, id__lte=last)).order_by("id")
    return list(events.values(*EXPORT_FIELDS)[:EXPORT_BATCH])


def export_rows(filters: AuditFilter, last: int) -> Iterator[dict[str, Any]]:
    """The filtered events up to id ``last``, oldest first, fetched in keyset batches."""
    after = 0
    while True:
        rows = _batch(filters, after, last)
        yield from rows
        if len(rows) < EXPORT_BATCH:
            return
        after = rows[-1]["id"]


async def export_rows_async(filters: AuditFilter, last: int) -> AsyncIterator[dict[str, Any]]:
    """``export_rows`` for ASGI: each batch is fetched in the sync thread, then streamed."""
    from asgiref.sync import sync_to_async

    after = 0
    while True:
        rows = await sync_to_async(_batch)(filters, after, last)
        for row in rows:
            yield row
        if len(rows) < EXPORT_BATCH:
            return
        after = rows[-1]["id"]


def csv_safe(value: Any) -> str:
    """A cell a spreadsheet shows as text: formulas (=, +, -, @ …) get a leading quote."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


class _Line:
    """A file-like object whose ``write`` hands back the line (csv.writer into a stream)."""

    def write(self, value: str) -> str:
        return value


_csv = csv.writer(_Line())


def csv_header() -> str:
    return _csv.writerow(EXPORT_FIELDS)


def csv_line(row: Mapping[str, Any]) -> str:
    data = event_out(row)
    return _csv.writerow([csv_safe(data[name]) for name in EXPORT_FIELDS])


def jsonl_line(row: Mapping[str, Any]) -> str:
    return json.dumps(event_out(row), ensure_ascii=False, sort_keys=True, default=str) + "\n"


# --- the chain ----------------------------------------------------------------------


def retention_anchors() -> list[str]:
    """The hashes retention purges left for the oldest remaining event to link to."""
    from access.services import RETENTION_ACTION

    details = AuditEvent.objects.filter(action=RETENTION_ACTION).values_list("detail", flat=True)
    return [str(d.get("anchor_hash") or "") for d in details if isinstance(d, dict)]


def audit_chain_check() -> ChainReport:
    """Verify the whole stored chain (the ``cairn_audit_verify`` command): every link, every row,
    every anchor in ``CAIRN_AUDIT_ANCHOR_FILE``; keyed rows with ``CAIRN_AUDIT_KEY_FILE``'s key."""
    from access.services import audit_anchors_read, audit_key

    return verify_chain(
        AuditEvent.objects.order_by("id").values(*EXPORT_FIELDS).iterator(chunk_size=EXPORT_BATCH),
        anchors=retention_anchors(), key=audit_key(), heads=audit_anchors_read(),
    )


def audit_jsonl_rows(lines: Iterable[str | bytes]) -> Iterator[dict[str, Any]]:
    """Events of a JSONL audit export (``jsonl_line``), as rows ``verify_chain`` reads; ``ValueError`` names a bad line."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or set(EXPORT_FIELDS) - set(row):
                raise ValueError("not an audit event")
            row["at"] = dt.datetime.fromisoformat(row["at"]) if row["at"] is not None else None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"line {number} is not an exported audit event ({exc})") from None
        yield row


def audit_jsonl_verify(lines: Iterable[str | bytes], *, key: bytes | None = None) -> ChainReport:
    """Verify an exported audit log on its own, as ``cairn_audit_verify`` does the stored one.

    The same rules: every link from the first event (which may link to a retention checkpoint recorded in
    the log itself) to the last, every row's hash, keyed rows with ``key``.  An audit log imported from
    another install is kept like this, apart from the receiving chain, and checked with
    ``cairn_audit_verify --archive``.
    """
    from access.services import RETENTION_ACTION

    rows = list(audit_jsonl_rows(lines))  # parsed once: the anchors are read from the same rows
    anchors = [str(row["detail"].get("anchor_hash") or "") for row in rows
               if row["action"] == RETENTION_ACTION and isinstance(row["detail"], dict)]
    return verify_chain(rows, anchors=anchors, key=key)


def _verification_file() -> Path:
    return Path(settings.DATA_DIR) / "audit-verification.json"


def audit_verification_record(report: ChainReport) -> None:
    """Keep the outcome of the last full verification (``cairn_audit_verify``) for ``/metrics``."""
    status = {"ok": report.ok, "checked": report.checked, "at": time.time()}
    path = _verification_file()
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(status))
    partial.replace(path)


def audit_verification_read() -> dict[str, Any] | None:
    """``{"ok", "checked", "at"}`` of the last verification on this data directory, or None."""
    try:
        status = json.loads(_verification_file().read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None
