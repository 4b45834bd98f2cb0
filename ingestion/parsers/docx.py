"""Word documents (.docx) with python-docx.

Paragraphs and tables are read in document order.  Heading levels come
from the paragraph style ("Heading N", "Title") or, for custom and
localised styles, from the outline level Word itself uses for its
navigation pane.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from ingestion.parsers.document import KIND_DOCX, Block, HeadingPath, ParsedDocument, ParseError
from ingestion.parsers.whitespace import clean_inline, clean_lines

DAMAGED_MESSAGE = "The DOCX file is damaged or is not a valid Word document"
_HEADING_STYLE = re.compile(r"heading\s*(\d)", re.IGNORECASE)
# Word's outline levels run 0-8 for headings 1-9; 9 means body text.
_BODY_OUTLINE_LEVEL = 9
_TITLE_LEVEL = 0
# Zip bombs: refuse a document whose parts unpack to more than this.
_MAX_UNPACKED_BYTES = 512 * 1024 * 1024
_ROW_SEPARATOR = "\n"
_CELL_SEPARATOR = " | "


def parse_docx(data: bytes) -> ParsedDocument:
    _check_unpacked_size(data)
    try:
        import docx  # python-docx; imported here so the other parsers load without it
        from docx.table import Table
        from docx.text.paragraph import Paragraph

        document = docx.Document(io.BytesIO(data))
        title = clean_inline(document.core_properties.title or "")
        headings = HeadingPath()
        blocks: list[Block] = []
        first_heading = ""
        styled_title = ""
        level_cache: dict[str, int | None] = {}
        for item in document.iter_inner_content():
            if isinstance(item, Paragraph):
                text = clean_lines(item.text)
                level = _heading_level(item, level_cache)
                if level is not None:
                    heading = " ".join(text.split("\n"))
                    headings.enter(level, heading)
                    if level == _TITLE_LEVEL and not styled_title:
                        styled_title = heading
                    first_heading = first_heading or heading
                if text:
                    blocks.append(Block(text, None, headings.path))
            elif isinstance(item, Table):
                text = _table_text(item)
                if text:
                    blocks.append(Block(text, None, headings.path))
    except ParseError:
        raise
    except Exception as exc:  # lxml, zipfile and python-docx raise many types on broken files
        raise ParseError(f"{DAMAGED_MESSAGE} ({type(exc).__name__})") from None
    return ParsedDocument(
        kind=KIND_DOCX, title=title or styled_title or first_heading, blocks=blocks, page_count=None
    )


def _check_unpacked_size(data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise ParseError(DAMAGED_MESSAGE) from None
    if unpacked > _MAX_UNPACKED_BYTES:
        raise ParseError("The DOCX file is too large once unpacked")


def _heading_level(paragraph: Any, cache: dict[str, int | None]) -> int | None:
    """0 for a Title, N for Heading N, None for body text."""
    own = _outline_level(paragraph._p)
    if own is not None:
        return None if own >= _BODY_OUTLINE_LEVEL else own + 1
    style = paragraph.style
    if style is None:
        return None
    key = style.style_id or style.name or ""
    if key not in cache:
        cache[key] = _style_level(style)
    return cache[key]


def _style_level(style: Any) -> int | None:
    seen = 0
    while style is not None and seen < 20:  # base-style chains can be cyclic in hand-made files
        name = style.name or ""
        if name.lower() == "title":
            return _TITLE_LEVEL
        match = _HEADING_STYLE.fullmatch(name.strip())
        if match:
            return int(match.group(1))
        level = _outline_level(style.element)
        if level is not None:
            return None if level >= _BODY_OUTLINE_LEVEL else level + 1
        style = style.base_style
        seen += 1
    return None


def _outline_level(element: Any) -> int | None:
    values = element.xpath("./w:pPr/w:outlineLvl/@w:val")
    if not values:
        return None
    try:
        return int(values[0])
    except ValueError:
        return None


def _table_text(table: Any) -> str:
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            # A horizontally merged cell is returned once per grid column.
            if previous is not None and cell._tc is previous:
                continue
            previous = cell._tc
            text = " ".join(clean_lines(cell.text).split("\n"))
            cells.append(text)
        if any(cells):
            rows.append(_CELL_SEPARATOR.join(cells))
    return _ROW_SEPARATOR.join(rows)
