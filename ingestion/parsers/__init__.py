"""Document parsers: bytes in, text blocks with page and heading out.

The kind of a file is detected from its content only (``sniff``); every
problem with the input surfaces as ``ParseError`` with a message fit to
show a user.  No Django here: this runs in any worker.
"""

from __future__ import annotations

from ingestion.parsers.decoding import DecodedText, decode_text
from ingestion.parsers.document import (
    HEADING_SEPARATOR,
    KIND_DOCX,
    KIND_HTML,
    KIND_MARKDOWN,
    KIND_PDF,
    KIND_TEXT,
    SUPPORTED_KINDS,
    Block,
    ParsedDocument,
    ParseError,
)
from ingestion.parsers.sniff import detect, sniff

__all__ = [
    "HEADING_SEPARATOR",
    "KIND_DOCX",
    "KIND_HTML",
    "KIND_MARKDOWN",
    "KIND_PDF",
    "KIND_TEXT",
    "SUPPORTED_KINDS",
    "Block",
    "ParseError",
    "ParsedDocument",
    "parse",
    "sniff",
]


def parse(data: bytes, kind: str | None = None) -> ParsedDocument:
    """Parse ``data`` as ``kind``, or as whatever ``sniff`` finds when ``kind`` is None.

    Raises ParseError for anything wrong with the input, and ValueError
    only for a ``kind`` that is not in SUPPORTED_KINDS (a caller's bug).
    """
    if kind is not None and kind not in SUPPORTED_KINDS:
        raise ValueError(f"unsupported kind {kind!r}; expected one of {SUPPORTED_KINDS}")
    try:
        return _parse(data, kind)
    except ParseError:
        raise
    except RecursionError:
        raise ParseError("The file is nested too deeply to read") from None
    except MemoryError:
        raise  # the caller's memory budget names itself (ingestion.parsing)
    except Exception as exc:
        # Last line of defence: a parser bug on odd input must still give the
        # job a readable error rather than a traceback and a retry loop.
        raise ParseError(f"The file could not be read ({type(exc).__name__})") from exc


def _parse(data: bytes, kind: str | None) -> ParsedDocument:
    decoded: DecodedText | None = None
    if kind is None:
        detection = detect(data)
        kind, decoded = detection.kind, detection.decoded
    if kind == KIND_PDF:
        from ingestion.parsers.pdf import parse_pdf

        return parse_pdf(data)
    if kind == KIND_DOCX:
        from ingestion.parsers.docx import parse_docx

        return parse_docx(data)
    if decoded is None:
        decoded = decode_text(data)
    if kind == KIND_HTML:
        from ingestion.parsers.html import html_text, parse_html

        return parse_html(html_text(data, decoded))
    if kind == KIND_MARKDOWN:
        from ingestion.parsers.markdown import parse_markdown

        return parse_markdown(decoded.text)
    from ingestion.parsers.text import parse_text

    return parse_text(decoded.text)
