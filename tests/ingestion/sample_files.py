"""Build sample documents in memory, so tests need no binary fixtures in the repository.

Other suites (API, end-to-end, benchmarks) import ``make_pdf`` and friends
from here; keep the signatures stable.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

# (level, text) for a heading, or a plain string for a paragraph; level 0 is
# the document title (DOCX "Title" style, HTML <h1>, Markdown "#").
Section = tuple[int, str] | str

CHINESE_TEXT = (
    "知识库把文档保存在你自己的电脑上，不会发送到任何云服务。"
    "每个文件在上传后都会被解析、切分成段落，并建立索引！"
    "检索时，系统会找到最相关的段落，并注明它们来自哪一页？"
    "维护窗口从第一个星期日的早上六点开始。访客必须在前台登记并始终佩戴胸卡。"
)


def make_pdf(pages: Sequence[str], *, title: str | None = None, password: str | None = None,
             font_size: float = 11) -> bytes:
    """A PDF with one page per string (an empty string gives a blank page).

    Text is set with the core Helvetica font, so it must be latin-1; a blank
    line in a string starts a new paragraph on that page.
    """
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=font_size)
    pdf.set_creator("cairn tests")
    if title is not None:
        pdf.set_title(title)
    if password is not None:
        pdf.set_encryption(owner_password=password + "-owner", user_password=password)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, font_size * 0.5, text)
    return bytes(pdf.output())


def make_image_pdf(pages: int = 1) -> bytes:
    """A PDF whose pages are only drawings: what a scan without OCR looks like to a text extractor."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    for _ in range(pages):
        pdf.add_page()
        pdf.set_fill_color(40, 40, 40)
        pdf.rect(20, 20, 120, 80, style="F")
        pdf.circle(x=100, y=200, radius=30, style="F")
    return bytes(pdf.output())


def make_docx(sections: Sequence[Section], *, title: str | None = None,
              table: Sequence[Sequence[str]] | None = None) -> bytes:
    """A DOCX: ``(level, text)`` items are headings (0 = Title style), strings are paragraphs.

    ``table``, if given, is appended as a table after the sections.
    """
    import docx

    document = docx.Document()
    if title is not None:
        document.core_properties.title = title
    for item in sections:
        if isinstance(item, tuple):
            level, text = item
            document.add_heading(text, level=level)
        else:
            document.add_paragraph(item)
    if table:
        grid = document.add_table(rows=len(table), cols=max(len(row) for row in table))
        for row_cells, row in zip(grid.rows, table, strict=True):
            for cell, value in zip(row_cells.cells, row, strict=False):
                cell.text = value
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        document.save(buffer)
    return buffer.getvalue()


def make_html(sections: Sequence[Section], *, title: str = "Sample page", with_noise: bool = True) -> bytes:
    """An HTML page; ``(level, text)`` items become <h{level+1}>, strings <p>.

    With ``with_noise`` it also carries script, style, noscript, template
    and SVG content, a navigation menu and an HTML comment, none of which
    is readable text.
    """
    from html import escape

    body: list[str] = []
    for item in sections:
        if isinstance(item, tuple):
            level, text = item
            body.append(f"<h{level + 1}>{escape(text)}</h{level + 1}>")
        else:
            body.append(f"<p>{escape(item)}</p>")
    noise_head = (
        "<style>body { font-family: STYLE_SECRET; }</style>\n"
        "<script>var SCRIPT_SECRET = 1; if (a < b && c > d) {}</script>\n"
    ) if with_noise else ""
    noise_body = (
        "<nav><a href='/'>NAV_SECRET</a></nav>\n"
        "<script type='application/json'>{\"x\": \"SCRIPT_SECRET\"}</script>\n"
        "<noscript>NOSCRIPT_SECRET</noscript><template><p>TEMPLATE_SECRET</p></template>\n"
        "<svg width='10' height='10'><title>SVG_SECRET</title><text>SVG_SECRET</text></svg>\n"
        "<!-- COMMENT_SECRET -->\n"
    ) if with_noise else ""
    page = (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{escape(title)}</title>\n{noise_head}</head>\n<body>\n{noise_body}"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
    return page.encode("utf-8")


def make_markdown(sections: Sequence[Section]) -> bytes:
    """Markdown with ATX headings (``#`` * (level + 1)); strings are paragraphs, verbatim."""
    parts: list[str] = []
    for item in sections:
        if isinstance(item, tuple):
            level, text = item
            parts.append(f"{'#' * (level + 1)} {text}")
        else:
            parts.append(item)
    return ("\n\n".join(parts) + "\n").encode("utf-8")


def make_text(paragraphs: Sequence[str], *, encoding: str = "utf-8") -> bytes:
    """Plain text, paragraphs separated by blank lines (``utf-8-sig``/``utf-16`` add a BOM)."""
    return "\n\n".join(paragraphs).encode(encoding)


def make_chinese_text() -> bytes:
    return make_text([CHINESE_TEXT, CHINESE_TEXT[::-1]])
