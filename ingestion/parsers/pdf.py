"""PDF text extraction with pdfium (via pypdfium2).

Threading: pdfium is not thread-safe at all -- not even for *different*
documents in different threads (pypdfium2's documentation is explicit:
concurrent calls "would crash or corrupt the process").  Every pdfium call
here therefore runs under one process-wide lock.  Celery's prefork workers
are separate processes and parse in parallel; threads in one process take
turns.  Objects are closed explicitly inside the lock, so no pdfium
finaliser runs later on some other thread.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Sequence

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from ingestion.parsers.document import KIND_PDF, Block, ParsedDocument, ParseError
from ingestion.parsers.whitespace import clean_inline, clean_lines

_PDFIUM_LOCK = threading.Lock()

PASSWORD_MESSAGE = "The PDF is password-protected"
NO_TEXT_MESSAGE = "The PDF has no extractable text (scanned images need OCR, which is not enabled)"
DAMAGED_PREFIX = "The PDF is damaged or truncated"
# pdfium ends a line with "\r\n"; a word hyphenated across lines may leave a
# marker (U+0002, a soft hyphen or U+FFFE) before it.
_LINE_BREAK = "\r\n"
_SOFT_HYPHENS = ("\x02", "\u00ad", "\ufffe")
# A gap between two lines counts as a paragraph break when it exceeds the
# page's usual line gap by this fraction of a line height.
_PARAGRAPH_GAP_LINES = 0.6
# The gap between two lines of one paragraph, as a fraction of the text's
# height, when a page has too few lines to measure it.
_SINGLE_LEADING = 0.5


def parse_pdf(data: bytes) -> ParsedDocument:
    with _PDFIUM_LOCK:
        document = _open(data)
        try:
            page_count = len(document)
            title = clean_inline(_metadata_title(document))
            blocks: list[Block] = []
            failed_pages = 0
            for index in range(page_count):
                try:
                    paragraphs = _page_paragraphs(document, index)
                except pdfium.PdfiumError:
                    # One broken page should not cost the rest of the document.
                    failed_pages += 1
                    continue
                blocks.extend(Block(text, index + 1, "") for text in paragraphs)
        finally:
            document.close()
    if not blocks:
        if failed_pages:
            raise ParseError(f"{DAMAGED_PREFIX}: none of its {page_count} pages could be read")
        raise ParseError(NO_TEXT_MESSAGE, reason="no_text")
    return ParsedDocument(kind=KIND_PDF, title=title, blocks=blocks, page_count=page_count)


def _open(data: bytes) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == pdfium_c.FPDF_ERR_PASSWORD:
            raise ParseError(PASSWORD_MESSAGE) from None
        if code == pdfium_c.FPDF_ERR_SECURITY:
            raise ParseError("The PDF uses an unsupported kind of encryption") from None
        reason = {
            pdfium_c.FPDF_ERR_FORMAT: "its structure cannot be read",
            pdfium_c.FPDF_ERR_FILE: "it cannot be read",
        }.get(code, "pdfium could not open it")
        raise ParseError(f"{DAMAGED_PREFIX}: {reason}") from None
    except Exception as exc:  # pdfium through ctypes can fail in other ways on hostile input
        raise ParseError(f"{DAMAGED_PREFIX}: {type(exc).__name__}") from None


def _metadata_title(document: pdfium.PdfDocument) -> str:
    try:
        return document.get_metadata_value("Title") or ""
    except Exception:
        # A broken Info dictionary only costs the title.
        return ""


def _page_paragraphs(document: pdfium.PdfDocument, index: int) -> list[str]:
    page = document[index]
    try:
        textpage = page.get_textpage()
        try:
            text = textpage.get_text_range()
            if not text.strip():
                return []
            lines = text.split(_LINE_BREAK)
            breaks = _paragraph_breaks(textpage, lines, text)
        finally:
            textpage.close()
    finally:
        page.close()
    return _paragraphs(lines, breaks)


def _paragraph_breaks(textpage: pdfium.PdfTextPage, lines: Sequence[str], text: str) -> set[int]:
    """Indexes ``i`` such that a paragraph starts at ``lines[i]``.

    pdfium's text has no blank lines between paragraphs, so they are found
    from geometry: a vertical gap clearly larger than the page's usual line
    spacing, or a jump back up the page (a new column).
    """
    if len(lines) < 2 or textpage.count_chars() != len(text):
        # Character indexes and string positions disagree (characters outside
        # the BMP); without a safe mapping, keep the page as one paragraph.
        return set()
    boxes: list[tuple[float, float] | None] = []
    position = 0
    for line in lines:
        boxes.append(_line_extent(textpage, position, len(line)) if line.strip() else None)
        position += len(line) + len(_LINE_BREAK)
    heights = [top - bottom for top, bottom in (b for b in boxes if b is not None) if top > bottom]
    gaps: list[tuple[int, float]] = []
    previous: tuple[float, float] | None = None
    for index, box in enumerate(boxes):
        if box is None:
            continue
        if previous is not None:
            gaps.append((index, previous[1] - box[0]))  # previous bottom minus this top
        previous = box
    if not heights or not gaps:
        return set()
    line_height = statistics.median(heights)
    # Overlapping lines (superscripts, a jump to a new column) say nothing about line spacing.
    ordinary = [gap for _, gap in gaps if gap >= -0.5 * line_height]
    # The usual line spacing is a low quantile, not the median: on a page of
    # short paragraphs, paragraph gaps can outnumber the gaps between lines.
    # With a single gap there is nothing to compare, so assume ordinary leading.
    if len(ordinary) >= 2:
        usual_gap = sorted(ordinary)[len(ordinary) // 4]
    else:
        usual_gap = _SINGLE_LEADING * line_height
    threshold = max(usual_gap, 0.0) + _PARAGRAPH_GAP_LINES * line_height
    return {index for index, gap in gaps if gap > threshold or gap < -line_height}


def _line_extent(textpage: pdfium.PdfTextPage, start: int, count: int) -> tuple[float, float] | None:
    """(top, bottom) of the characters ``start..start+count`` in page coordinates (y grows upwards)."""
    if count <= 0:
        return None
    rects = textpage.count_rects(start, count)
    top: float | None = None
    bottom: float | None = None
    for index in range(rects):
        _, rect_bottom, _, rect_top = textpage.get_rect(index)
        top = rect_top if top is None else max(top, rect_top)
        bottom = rect_bottom if bottom is None else min(bottom, rect_bottom)
    if top is None or bottom is None:
        return None
    return top, bottom


def _paragraphs(lines: Sequence[str], breaks: set[int]) -> list[str]:
    paragraphs: list[str] = []
    current: list[str] = []
    for index, line in enumerate(lines):
        if (index in breaks or not line.strip()) and current:
            paragraphs.append(clean_lines("\n".join(current)))
            current = []
        if not line.strip():
            continue
        if current and current[-1].endswith(_SOFT_HYPHENS):
            # A word the typesetter hyphenated across lines: join it back up.
            current[-1] = current[-1].rstrip("".join(_SOFT_HYPHENS)) + line.lstrip()
        else:
            current.append(line)
    if current:
        paragraphs.append(clean_lines("\n".join(current)))
    return [p for p in paragraphs if p]
