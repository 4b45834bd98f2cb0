"""Word documents (.docx) with python-docx.

Paragraphs and tables are read in document order.  Heading levels come
from the paragraph style ("Heading N", "Title") or, for custom and
localised styles, from the outline level Word itself uses for its
navigation pane.

Hostile files: before python-docx opens the archive, every part is
decompressed as a stream, a megabyte at a time, counting the bytes that
really come out — a part whose header understates its size is caught by
its checksum, never by allocating what it claims not to hold.  Styles are
resolved by id from one table built once, so each paragraph costs the same
whatever the number of styles (python-docx scans every style per paragraph
when asked for ``paragraph.style``).
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
# Zip bombs: refuse a document whose parts unpack to more than this (counted, not declared).
_MAX_UNPACKED_BYTES = 256 * 1024 * 1024
_READ_BYTES = 1 << 20
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
        styles = _StyleLevels(document)
        for item in document.iter_inner_content():
            if isinstance(item, Paragraph):
                text = clean_lines(item.text)
                level = _heading_level(item, styles)
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
    """Every part, decompressed as a stream and counted: refuse past the cap or on a checksum mismatch."""
    unpacked = 0
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if info.file_size > _MAX_UNPACKED_BYTES:
                    raise ParseError("The DOCX file is too large once unpacked")
                with archive.open(info) as part:
                    while chunk := part.read(_READ_BYTES):
                        unpacked += len(chunk)
                        if unpacked > _MAX_UNPACKED_BYTES:
                            raise ParseError("The DOCX file is too large once unpacked")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError):
        # A part whose size was understated fails its CRC check here, after at most its true bytes.
        raise ParseError(DAMAGED_MESSAGE) from None


class _StyleLevels:
    """Heading levels of paragraph styles by id, each style resolved once."""

    def __init__(self, document: Any) -> None:
        from docx.enum.style import WD_STYLE_TYPE

        self._styles = {style.style_id: style for style in document.styles if style.style_id}
        self._default = document.styles.default(WD_STYLE_TYPE.PARAGRAPH)
        self._levels: dict[str | None, int | None] = {}

    def level(self, style_id: str | None) -> int | None:
        if style_id not in self._levels:
            style = self._styles.get(style_id) if style_id else None
            style = style or self._default
            self._levels[style_id] = _style_level(style) if style is not None else None
        return self._levels[style_id]


def _heading_level(paragraph: Any, styles: _StyleLevels) -> int | None:
    """0 for a Title, N for Heading N, None for body text."""
    own = _outline_level(paragraph._p)
    if own is not None:
        return None if own >= _BODY_OUTLINE_LEVEL else own + 1
    return styles.level(paragraph._p.style)


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
