"""The citation viewer's API: a PDF page as an image, and where a passage lies on its page.

Both are read exactly as a download is: the document (or chunk) must be
readable by the caller, else 404 and a denied audit event (``kb.api.errors``).
Rendering runs in a budgeted child process (``ingestion.api.page_png``) and
its result is cached on disk (``kb.page_cache``), keyed by the blob's sha256.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpResponse
from rest_framework import serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ingestion import api as ingestion
from kb import page_cache, selectors
from kb.api.errors import error_body
from kb.exceptions import UnsupportedType
from kb.models import DocumentVersion
from kb.storage import blob_path

KIND_PDF = "pdf"
DEFAULT_WIDTH = 1000
MIN_WIDTH = 200
MAX_WIDTH = 1600
# Widths are rounded to this step, so a client cannot fill the cache with one page at every width.
WIDTH_STEP = 100


def _json_only() -> tuple[Any, str]:
    # Errors are JSON whatever an <img> asked for in Accept.
    return JSONRenderer(), "application/json"


def _page_width(asked: int) -> int:
    clamped = min(max(asked, MIN_WIDTH), MAX_WIDTH)
    return max(MIN_WIDTH, round(clamped / WIDTH_STEP) * WIDTH_STEP)


def _pdf_version(version: DocumentVersion) -> DocumentVersion:
    if version.kind != KIND_PDF:
        raise UnsupportedType("Only PDF documents have page images; this document is "
                              f"{version.kind or 'not a PDF'}. Its text is on the document's page.")
    return version


def _unreadable(message: str) -> Response:
    return Response(error_body("unreadable_page", message), status=status.HTTP_422_UNPROCESSABLE_ENTITY)


class DocumentPageView(APIView):
    """``GET /api/v1/documents/<id>/pages/<n>.png?width=…``: page n (from 1) of the searchable version."""

    class Input(serializers.Serializer):
        width = serializers.IntegerField(required=False, min_value=1, max_value=100_000, default=DEFAULT_WIDTH)

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        return _json_only()

    def get(self, request: Request, document_id: str, page: str) -> HttpResponse | Response:
        document = selectors.document_get(request.user, document_id)
        if document.current_version is None:  # readable, but no version is searchable yet: no denial to audit
            return Response(error_body("not_found", "The document has no searchable version yet."),
                            status=status.HTTP_404_NOT_FOUND)
        version = _pdf_version(document.current_version)
        data = self.Input(data=request.query_params)
        data.is_valid(raise_exception=True)
        width = _page_width(data.validated_data["width"])
        number = int(page) if page.isdigit() and len(page) < 9 else 0
        if number < 1 or (version.page_count is not None and number > version.page_count):
            return Response(error_body("not_found", f"The document has no page {page[:20]}."),
                            status=status.HTTP_404_NOT_FOUND)
        png = page_cache.page_cached(version.sha256, number, width)
        if png is None:
            try:
                png = ingestion.page_png(blob_path(version.sha256), number, width,
                                         memory_mb=settings.CAIRN_PAGE_RENDER_MAX_MB,
                                         seconds=settings.CAIRN_PAGE_RENDER_TIMEOUT)
            except ingestion.PageError as exc:
                return _unreadable(str(exc))
            page_cache.page_cache_store(version.sha256, number, width, png)
        response = HttpResponse(png, content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"
        response["X-Content-Type-Options"] = "nosniff"
        return response


class ChunkBoxesView(APIView):
    """``GET /api/v1/chunks/<id>/boxes``: the passage's line rectangles on its page, normalised to 0..1.

    ``{"page": n, "boxes": [[x0, y0, x1, y1], …], "page_size": [w, h]}`` (y grows down, size in
    points); a passage of a document that is not a PDF has no page: ``page`` and ``page_size`` null.
    """

    def get(self, request: Request, chunk_id: str) -> Response:
        chunk = selectors.chunk_get(request.user, chunk_id)
        version = chunk.version
        if version.kind != KIND_PDF or chunk.page is None:
            return Response({"chunk_id": chunk.pk, "document_id": chunk.document_id, "page": None,
                             "boxes": [], "page_size": None})
        try:
            found = ingestion.page_boxes(blob_path(version.sha256), chunk.page, chunk.text,
                                         memory_mb=settings.CAIRN_PAGE_RENDER_MAX_MB,
                                         seconds=settings.CAIRN_PAGE_RENDER_TIMEOUT)
        except ingestion.PageError as exc:
            return _unreadable(str(exc))
        response = Response({"chunk_id": chunk.pk, "document_id": chunk.document_id, "page": chunk.page,
                             "boxes": found.boxes, "page_size": [round(v, 2) for v in found.page_size]})
        response["Cache-Control"] = "private, max-age=3600"
        return response
