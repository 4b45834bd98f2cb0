"""Request body parsers that refuse hostile input with a 400 instead of failing inside.

Multipart: Django quietly reduces ``../../etc/passwd`` to ``passwd`` and
drops NUL bytes.  Cairn never uses a client's file name as a path anyway
(storage is content-addressed), but a name like that is never sent by a
browser or ``curl -F file=@…`` — it is a probe, and the client deserves to be
told.  JSON: Python's parser recurses, so ``[`` × 100,000 ends in a
``RecursionError`` (a 500) unless it is caught here.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework.exceptions import ParseError
from rest_framework.parsers import DataAndFiles, JSONParser, MultiPartParser


class _StrictNames(DjangoMultiPartParser):
    def sanitize_file_name(self, file_name: str) -> str | None:
        raw = html.unescape(file_name)
        if "/" in raw or "\\" in raw:
            raise MultiPartParserError("the file name must be a plain name, without folders ('/' or '\\')")
        if any(not char.isprintable() for char in raw):
            raise MultiPartParserError("the file name contains control characters (such as NUL)")
        return super().sanitize_file_name(file_name)


class StrictMultiPartParser(MultiPartParser):
    def parse(self, stream: Any, media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> DataAndFiles:
        parser_context = parser_context or {}
        request = parser_context["request"]
        encoding = parser_context.get("encoding", "utf-8")
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        try:
            data, files = _StrictNames(meta, stream, request.upload_handlers, encoding).parse()
        except MultiPartParserError as exc:
            raise ParseError(f"Upload refused: {exc}.") from exc
        return DataAndFiles(data, files)


class StrictJSONParser(JSONParser):
    """DRF's JSON parser; a body nested too deeply for Python's parser is a 400, not a 500."""

    def parse(self, stream: Any, media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
