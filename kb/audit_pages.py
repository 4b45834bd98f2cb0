"""Audit review pages: the filtered event list, one event with the chunks it served, exports.

Admins and auditors only.  Anyone else gets the ordinary 404 page, and the
attempt is logged as a denied access.  An export is itself an audit event,
written before the first byte is streamed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render

from access import audit_review
from access.models import AuditEvent
from access.services import access_denied_record, actor_from_request, audit_record
from kb.audit_review import audited_chunks

EVENTS_PER_PAGE = 50
Line = Callable[[Mapping[str, Any]], str]
EXPORT_FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "jsonl": ("application/x-ndjson; charset=utf-8", "jsonl"),
}


def _reviewer_or_404(request: HttpRequest, target_id: object = "") -> None:
    if not audit_review.can_review_audit(request.user):
        access_denied_record(actor=actor_from_request(request), target_type="audit_log", target_id=target_id,
                             rule="audit review is for admins and auditors")
        raise Http404("No such page")


@login_required
def audit_list(request: HttpRequest) -> HttpResponse:
    _reviewer_or_404(request)
    error = ""
    try:
        filters = audit_review.AuditFilter.from_params(request.GET)
    except audit_review.InvalidFilter as exc:
        error, filters = str(exc), None
    events = audit_review.audit_events(filters) if filters else AuditEvent.objects.none()
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    query = urlencode(filters.as_params()) if filters else ""
    return render(request, "audit/list.html", {
        "page": page, "error": error, "query": query, "values": request.GET,
        "outcomes": AuditEvent.Outcome.values,
    }, status=400 if error else 200)


@login_required
def audit_event(request: HttpRequest, event_id: int) -> HttpResponse:
    _reviewer_or_404(request, event_id)
    event = audit_review.audit_event_get(event_id)
    if event is None:
        raise Http404("No such event")
    chunk_ids = audit_review.chunk_ids_served(event)
    chunks = audited_chunks(request.user, chunk_ids) if chunk_ids else []
    cited = set(event.detail.get("chunks_cited") or []) if isinstance(event.detail, dict) else set()
    # Opening an event shows passage text: that read is on the record too.
    audit_record(actor=actor_from_request(request), action="audit.view", target_type="audit_event",
                 target_id=event.pk)
    return render(request, "audit/event.html", {
        "event": event, "chunks": chunks, "cited": cited,
        "detail_json": json.dumps(event.detail, indent=2, ensure_ascii=False, sort_keys=True),
    })


@login_required
def audit_export(request: HttpRequest, fmt: str) -> HttpResponse | StreamingHttpResponse:
    _reviewer_or_404(request, f"export.{fmt}")
    if fmt not in EXPORT_FORMATS:
        raise Http404("No such export format")
    try:
        filters = audit_review.AuditFilter.from_params(request.GET)
    except audit_review.InvalidFilter as exc:
        return HttpResponse(f"Invalid filter: {exc}\n", status=400, content_type="text/plain; charset=utf-8")
    last, rows = audit_review.export_bound(filters)
    audit_record(actor=actor_from_request(request), action="audit.export", target_type="audit_log",
                 detail={"format": fmt, "filters": filters.as_params(), "rows": rows, "through_id": last})
    content_type, extension = EXPORT_FORMATS[fmt]
    line: Line = audit_review.csv_line if fmt == "csv" else audit_review.jsonl_line
    header = audit_review.csv_header() if fmt == "csv" else ""
    content: Iterator[str] | AsyncIterator[str]
    if isinstance(request, ASGIRequest):
        content = _lines_async(header, line, audit_review.export_rows_async(filters, last))
    else:
        content = _lines(header, line, audit_review.export_rows(filters, last))
    response = StreamingHttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="cairn-audit-{last}.{extension}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-store"
    return response


def _lines(header: str, line: Line, rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    if header:
        yield header
    for row in rows:
        yield line(row)


async def _lines_async(header: str, line: Line, rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    if header:
        yield header
    async for row in rows:
        yield line(row)
