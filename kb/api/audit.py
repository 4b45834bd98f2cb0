"""GET /api/v1/audit — the audit log for admins and auditors (filters as in the web UI, keyset pages)."""

from __future__ import annotations

from urllib.parse import urlencode

from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access import audit_review
from access.services import access_denied_record, actor_from_request
from kb.exceptions import InvalidInput, NotFound

MAX_PAGE_SIZE = 500


class AuditEventsView(APIView):
    """Newest first.  ``next`` is the URL of the following (older) page, or null."""

    class Input(serializers.Serializer):
        page_size = serializers.IntegerField(required=False, min_value=1, max_value=MAX_PAGE_SIZE, default=100)
        before = serializers.IntegerField(required=False, min_value=1)

    def get(self, request: Request) -> Response:
        if not audit_review.can_review_audit(request.user):
            access_denied_record(actor=actor_from_request(request), target_type="audit_log",
                                 rule="audit review is for admins and auditors")
            raise NotFound("resource")
        page = self.Input(data=request.query_params)
        page.is_valid(raise_exception=True)
        try:
            filters = audit_review.AuditFilter.from_params(request.query_params)
        except audit_review.InvalidFilter as exc:
            raise InvalidInput(str(exc)) from None
        size = page.validated_data["page_size"]
        events = audit_review.audit_events(filters)
        if "before" in page.validated_data:
            events = events.filter(id__lt=page.validated_data["before"])
        rows = list(events.values(*audit_review.EXPORT_FIELDS)[: size + 1])
        more, rows = len(rows) > size, rows[:size]
        next_url = None
        if more:
            params = {**filters.as_params(), "page_size": size, "before": rows[-1]["id"]}
            next_url = request.build_absolute_uri(f"{request.path}?{urlencode(params)}")
        return Response({"results": [audit_review.event_out(row) for row in rows], "next": next_url})
