"""HTML to text with the standard library's tolerant ``html.parser``.

The parser is event based (no tree), so deep nesting costs nothing; the
only state is a small stack of elements whose content is dropped.
Block-level elements end a paragraph, ``<br>`` breaks a line, h1-h6 set
the heading path, whitespace collapses as a browser would collapse it
(except inside ``<pre>``).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from ingestion.parsers.decoding import DecodedText, declared_charset
from ingestion.parsers.document import KIND_HTML, Block, HeadingPath, ParsedDocument
from ingestion.parsers.whitespace import clean_inline, clean_lines

# Content that is not text a reader sees.  <nav> is menus: repeated on
# every page of a site, it would only add noise to search.
_DROPPED = frozenset({"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "canvas", "nav",
                      "select", "button"})
_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "header", "hgroup", "hr", "html", "legend", "li", "main",
    "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul",
})
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_CELLS = frozenset({"td", "th"})
# Elements that never have content or an end tag.
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                   "track", "wbr"})
_CELL_SEPARATOR = " | "
# What may stand in <head>; any other element means the head has ended,
# even when the page never closes it (browsers do the same).
_HEAD_CONTENT = frozenset({"base", "link", "meta", "noscript", "script", "style", "template", "title"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.title = ""
        self.first_h1 = ""
        self._headings = HeadingPath()
        self._parts: list[str] = []
        # Open dropped elements, innermost last, plus a count per tag name so
        # that a stray end tag is looked up in O(1) however deep the nesting.
        self._dropped: list[str] = []
        self._dropped_counts: dict[str, int] = {}
        self._in_head = False
        self._in_title = False
        self._title_parts: list[str] = []
        self._heading_level = 0
        self._pre_depth = 0
        self._cells_in_row = 0

    # -- events ---------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED:
            self._dropped.append(tag)
            self._dropped_counts[tag] = self._dropped_counts.get(tag, 0) + 1
            return
        if self._dropped:
            return
        if tag == "head":
            self._in_head = True
        elif self._in_head and tag not in _HEAD_CONTENT:
            self._in_head = False
        if tag == "title" and not self.title:
            self._in_title = True
            return
        if self._in_head:
            return
        if tag in _HEADINGS:
            self._flush()
            self._heading_level = _HEADINGS[tag]
        elif tag in _BLOCK:
            self._flush()
            if tag == "tr":
                self._cells_in_row = 0
            if tag == "pre":
                self._pre_depth += 1
        elif tag == "br":
            self._parts.append("\n")
        elif tag in _CELLS:
            if self._cells_in_row:
                self._parts.append(_CELL_SEPARATOR)
            self._cells_in_row += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/>, <hr/>: self-closing tags open nothing, so nothing to pop later.
        if tag in _DROPPED:
            return
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._dropped:
            if self._dropped_counts.get(tag):
                # Close the innermost matching element and whatever was left open inside it.
                while self._dropped:
                    closed = self._dropped.pop()
                    self._dropped_counts[closed] -= 1
                    if closed == tag:
                        break
            return
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = clean_inline(" ".join(self._title_parts))
            return
        if tag == "head":
            self._in_head = False
            return
        if self._in_head:
            return
        if tag in _HEADINGS and self._heading_level:
            self._end_heading()
        elif tag in _BLOCK:
            self._flush()
            if tag == "pre" and self._pre_depth:
                self._pre_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._dropped:
            return
        if self._in_title:
            self._title_parts.append(data)
            return
        if self._in_head:
            return
        if self._pre_depth:
            self._parts.append(data)
        else:
            # Source line breaks are just spaces in HTML.
            self._parts.append(data.replace("\r", " ").replace("\n", " "))

    # -- paragraphs -------------------------------------------------------------
    def _text(self) -> str:
        text = clean_lines("".join(self._parts))
        self._parts = []
        return text

    def _flush(self) -> None:
        if self._heading_level:
            # A block tag inside a heading (<h2><div>..</div></h2>) ends nothing.
            return
        text = self._text()
        if text:
            self.blocks.append(Block(text, None, self._headings.path))

    def _end_heading(self) -> None:
        level = self._heading_level
        self._heading_level = 0
        title = " ".join(self._text().split("\n"))
        self._headings.enter(level, title)
        if title:
            if level == 1 and not self.first_h1:
                self.first_h1 = title
            self.blocks.append(Block(title, None, self._headings.path))

    def finish(self) -> None:
        self.close()
        if self._heading_level:
            self._end_heading()
        self._flush()
        if self._in_title and not self.title:
            self.title = clean_inline(" ".join(self._title_parts))


def html_text(data: bytes, decoded: DecodedText) -> str:
    """The page's text, honouring a declared charset when UTF-8 did not fit."""
    if decoded.legacy:
        charset = declared_charset(data)
        if charset:
            return data.decode(charset, errors="replace")
    return decoded.text


_TAG_OPEN = re.compile(r"<(?=[A-Za-z/!?])")


def defuse_unclosed_tags(text: str) -> str:
    """Escape every ``<`` that opens a tag which another ``<`` interrupts before its ``>``.

    ``html.parser`` rescans an unterminated tag to the end of the input at
    every ``<`` it meets after it, so ``<a <a <a …`` costs time quadratic in
    the input (minutes for a few hundred kilobytes).  A tag whose ``>``
    comes after the next ``<`` is not a tag a browser would render either;
    turning its ``<`` into ``&lt;`` keeps it as text and the parse linear.
    Comments are skipped whole: ``<`` inside them is not markup.
    """
    if "<" not in text:
        return text
    out: list[str] = []
    start = 0
    gt = -2  # position of the next ">" at or after the current "<"; recomputed only when passed
    match = _TAG_OPEN.search(text)
    while match:
        i = match.start()
        if text.startswith("<!--", i):
            end = text.find("-->", i + 4)
            if end < 0:
                break
            match = _TAG_OPEN.search(text, end + 3)
            continue
        if gt != -1 and gt < i:
            gt = text.find(">", i + 1)
        following = text.find("<", i + 1)
        if gt == -1 or (following != -1 and following < gt):
            out.append(text[start:i])
            out.append("&lt;")
            start = i + 1
        match = _TAG_OPEN.search(text, i + 1)
    if not out:
        return text
    out.append(text[start:])
    return "".join(out)


def parse_html(text: str) -> ParsedDocument:
    extractor = _TextExtractor()
    extractor.feed(defuse_unclosed_tags(text))
    extractor.finish()
    title = extractor.title or extractor.first_h1
    return ParsedDocument(kind=KIND_HTML, title=title, blocks=extractor.blocks, page_count=None)
