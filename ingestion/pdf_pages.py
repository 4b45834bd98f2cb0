"""A PDF page as an image, and where a passage's text lies on it, within a time and memory budget.

The citation viewer shows the cited page and highlights the passage on it.
Both jobs open a stored PDF with pdfium, which a hostile file can make hang
or allocate without bound, so each runs in a child process
(``python -m ingestion.pdf_pages``) that limits its own address space and
CPU time before it touches the file; the caller waits at most
``seconds`` of wall time and kills it after that — the approach the
parsers take (``ingestion.parsing``), with its own settings
(``CAIRN_PAGE_RENDER_TIMEOUT``, ``CAIRN_PAGE_RENDER_MAX_MB``).  A child per request costs a Python
start-up; the web layer caches the rendered pages on disk.

Boxes: the passage's text is found in the page's text with whitespace and
pdfium's markers (soft hyphens, line ends) ignored, as the PDF parser
dropped them; a passage that runs on to the next page is matched as far as
it goes on this one.  pdfium's rectangles for the matched characters (one
per run of text on a line) are merged into one rectangle per line and
normalised to the page: ``[x0, y0, x1, y1]`` in 0..1 with y growing down.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PROJECT = str(Path(__file__).resolve().parents[1])
# A page taller than this many pixels is rendered at a smaller scale (a page 100 m long stays small).
MAX_HEIGHT_PX = 4000
MAX_WIDTH_PX = 1600
# Enough of the passage's start to find it on the page; the match then runs on as far as it agrees.
_ANCHOR_CHARS = 48
_INVISIBLE = frozenset("\x00\x01\x02\x03\r\n\t \u00a0\u00ad\u200b\u2060\ufeff\ufffe\uffff\u3000")


class PageError(Exception):
    """The page could not be rendered or read; the message says why, for people."""


@dataclass(frozen=True)
class PageBoxes:
    page_size: tuple[float, float]  # points
    boxes: list[list[float]]


def page_png(path: Path, page: int, width: int, *, memory_mb: int, seconds: float) -> bytes:
    """Page ``page`` (from 1) of the PDF at ``path`` as a PNG about ``width`` pixels wide."""
    value = _in_child({"op": "render", "path": str(path), "page": page, "width": width}, memory_mb, seconds)
    if not isinstance(value, bytes):
        raise PageError("The page could not be rendered.")
    return value


def page_boxes(path: Path, page: int, text: str, *, memory_mb: int, seconds: float) -> PageBoxes:
    """Where ``text`` lies on page ``page`` (from 1): line rectangles normalised to the page."""
    value = _in_child({"op": "boxes", "path": str(path), "page": page, "text": text}, memory_mb, seconds)
    if not isinstance(value, dict):
        raise PageError("The page's text could not be read.")
    return PageBoxes(page_size=tuple(value["page_size"]), boxes=value["boxes"])


def _in_child(request: dict[str, Any], memory_mb: int, seconds: float) -> Any:
    request = {**request, "memory_mb": memory_mb, "seconds": seconds}
    path = os.pathsep.join(p for p in (_PROJECT, os.environ.get("PYTHONPATH", "")) if p)
    try:
        done = subprocess.run(  # noqa: S603 - our own module, by this interpreter
            [sys.executable, "-m", "ingestion.pdf_pages"], input=json.dumps(request).encode(),
            capture_output=True, timeout=seconds, env={**os.environ, "PYTHONPATH": path}, close_fds=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PageError(f"Reading the page took longer than its {seconds:g}-second budget "
                        "(CAIRN_PAGE_RENDER_TIMEOUT).") from None
    if done.returncode != 0 or not done.stdout:
        raise PageError("Reading the page stopped (the PDF may be damaged, or it needed more than its "
                        f"{memory_mb} MB memory budget, CAIRN_PAGE_RENDER_MAX_MB).")
    outcome, value = pickle.loads(done.stdout)  # our own child's answer  # noqa: S301
    if outcome != "ok":
        raise PageError(str(value))
    return value


# --- in the child -------------------------------------------------------------------------------


def _child_main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    limit = int(request["memory_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cpu = int(request["seconds"]) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print from a library must not corrupt the answer
    try:
        if request["op"] == "render":
            answer: tuple[str, Any] = ("ok", _render(request["path"], int(request["page"]), int(request["width"])))
        else:
            answer = ("ok", _boxes(request["path"], int(request["page"]), str(request["text"])))
    except MemoryError:
        answer = ("error", "Reading the page needed more memory than its budget (CAIRN_PAGE_RENDER_MAX_MB).")
    except PageError as exc:
        answer = ("error", str(exc))
    except Exception as exc:  # pdfium through ctypes on hostile input
        answer = ("error", f"The page could not be read ({type(exc).__name__}).")
    out.write(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
    out.flush()


def _open_page(path: str, number: int) -> tuple[Any, Any]:
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError:
        raise PageError("The PDF cannot be opened.") from None
    if not 1 <= number <= len(document):
        raise PageError(f"The PDF has no page {number}.")
    return document, document[number - 1]


def _render(path: str, number: int, width: int) -> bytes:
    document, page = _open_page(path, number)
    page_width, page_height = page.get_size()
    if page_width <= 0 or page_height <= 0:
        raise PageError("The page has no size.")
    width = max(1, min(width, MAX_WIDTH_PX))
    scale = min(width / page_width, MAX_HEIGHT_PX / page_height)
    bitmap = page.render(scale=scale, rev_byteorder=True, may_draw_forms=True)
    pixels = bitmap.to_numpy()  # height x width x 3 (RGB)
    return _png(pixels)


def _png(pixels: Any) -> bytes:
    """An RGB numpy array as a PNG (zlib only: no imaging library needed)."""
    import numpy as np

    height, width = pixels.shape[0], pixels.shape[1]
    rows = np.zeros((height, width * 3 + 1), dtype=np.uint8)  # each row starts with filter type 0
    rows[:, 1:] = pixels[:, :, :3].reshape(height, width * 3)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


def _boxes(path: str, number: int, text: str) -> dict[str, Any]:
    document, page = _open_page(path, number)
    page_width, page_height = page.get_size()
    textpage = page.get_textpage()
    count = textpage.count_chars()
    page_text = textpage.get_text_range() if count else ""
    boxes: list[list[float]] = []
    if count and len(page_text) == count and page_width > 0 and page_height > 0:
        span = _find_span(page_text, text)
        if span is not None:
            start, end = span
            rects = [textpage.get_rect(i) for i in range(textpage.count_rects(start, end - start))]
            left, bottom, _, _ = page.get_cropbox() if hasattr(page, "get_cropbox") else (0, 0, 0, 0)
            for x0, y0, x1, y1 in _merge_lines(rects):
                boxes.append([
                    _unit((x0 - left) / page_width), _unit(1 - (y1 - bottom) / page_height),
                    _unit((x1 - left) / page_width), _unit(1 - (y0 - bottom) / page_height),
                ])
    return {"page_size": [page_width, page_height], "boxes": boxes}


def _unit(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 5)


def _visible(text: str) -> tuple[str, list[int]]:
    """``text`` without whitespace and markers, and each kept character's index in ``text``."""
    kept: list[str] = []
    where: list[int] = []
    for index, char in enumerate(text):
        if char in _INVISIBLE or char.isspace():
            continue
        kept.append(char)
        where.append(index)
    return "".join(kept), where


def _find_span(page_text: str, passage: str) -> tuple[int, int] | None:
    """The character range ``[start, end)`` of ``page_text`` that holds ``passage`` (or its start)."""
    page, where = _visible(page_text)
    wanted, _ = _visible(passage)
    if not page or not wanted:
        return None
    position = page.find(wanted)
    length = len(wanted)
    if position < 0:
        # The passage runs on to the next page (or was cut differently): find its start, then follow it.
        anchor = wanted[:_ANCHOR_CHARS]
        position = page.find(anchor)
        while position < 0 and len(anchor) > 8:
            anchor = anchor[: len(anchor) // 2]
            position = page.find(anchor)
        if position < 0:
            return None
        length = 0
        while (position + length < len(page) and length < len(wanted)
               and page[position + length] == wanted[length]):
            length += 1
    return where[position], where[position + length - 1] + 1


def _merge_lines(rects: list[tuple[float, float, float, float]]) -> list[tuple[float, float, float, float]]:
    """pdfium's rectangles (left, bottom, right, top) merged into one per line."""
    lines: list[list[float]] = []
    for left, bottom, right, top in rects:
        if right <= left or top <= bottom:
            continue
        for line in lines:
            overlap = min(top, line[3]) - max(bottom, line[1])
            if overlap > 0.5 * min(top - bottom, line[3] - line[1]):
                line[0], line[1] = min(line[0], left), min(line[1], bottom)
                line[2], line[3] = max(line[2], right), max(line[3], top)
                break
        else:
            lines.append([left, bottom, right, top])
    return [(a, b, c, d) for a, b, c, d in lines]


if __name__ == "__main__":
    _child_main()
