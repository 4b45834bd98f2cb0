"""Plain text: paragraphs are separated by blank lines."""

from __future__ import annotations

from ingestion.parsers.document import KIND_TEXT, Block, ParsedDocument
from ingestion.parsers.whitespace import split_paragraphs

# A first line longer than this is prose, not a title.
_MAX_TITLE_CHARS = 200


def parse_text(text: str) -> ParsedDocument:
    paragraphs = split_paragraphs(text)
    blocks = [Block(paragraph, None, "") for paragraph in paragraphs]
    first_line = paragraphs[0].split("\n", 1)[0] if paragraphs else ""
    title = first_line if len(first_line) <= _MAX_TITLE_CHARS else ""
    return ParsedDocument(kind=KIND_TEXT, title=title, blocks=blocks, page_count=None)
