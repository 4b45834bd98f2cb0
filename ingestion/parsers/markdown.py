"""Markdown: a line-based reading that keeps the text and the heading structure.

Not a full CommonMark renderer: markup is stripped lightly (links become
their text, emphasis and code markers go, HTML tags go), code blocks are
kept as text, and ATX/setext headings build the heading path.  Every
pattern is bounded so that hostile input (a megabyte-long line of "[")
costs linear time.
"""

from __future__ import annotations

import re
import textwrap

from ingestion.parsers.document import KIND_MARKDOWN, Block, HeadingPath, ParsedDocument
from ingestion.parsers.whitespace import clean_inline, clean_lines, normalise_newlines

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+|$)")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*")
_THEMATIC_BREAK = re.compile(r" {0,3}(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})")
_LINK_DEFINITION = re.compile(r" {0,3}\[[^\]\n]{1,300}\]:[ \t]*\S")
_BULLET = re.compile(r"\A( {0,12})[-*+][ \t]+")
_QUOTE = re.compile(r"\A {0,3}(?:>[ \t]?)+")

_IMAGE = re.compile(r"!\[([^\]\n]{0,300})\]\([^)\n]{0,500}\)")
_LINK = re.compile(r"\[([^\]\n]{1,300})\]\([^)\n]{0,500}\)")
_REFERENCE_LINK = re.compile(r"\[([^\]\n]{1,300})\]\[[^\]\n]{0,300}\]")
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto):[^>\s]{1,500})>")
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]{0,30}(?:\s[^<>\n]{0,500})?/?>|<!--.{0,2000}?-->")
_CODE_SPAN = re.compile(r"(`{1,3})([^`\n]{1,300}?)\1")
_STRONG = re.compile(r"(\*\*|__)(?=\S)([^\n]{1,300}?)(?<=\S)\1")
_EMPHASIS_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]{1,300}?)(?<=\S)\*(?![\w*])")
_EMPHASIS_UNDERSCORE = re.compile(r"(?<![\w_])_(?=[^\s_])([^_\n]{1,300}?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"~~(?=\S)([^~\n]{1,300}?)(?<=\S)~~")
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def strip_inline_markup(line: str) -> str:
    """The readable text of one line of markdown."""
    # Cheap guards first: a line without "](" or "][" cannot hold a link, and
    # skipping the (bounded but 300-wide) patterns keeps "[[[[…" lines fast.
    if "](" in line:
        line = _IMAGE.sub(r"\1", line)
        line = _LINK.sub(r"\1", line)
    if "][" in line:
        line = _REFERENCE_LINK.sub(r"\1", line)
    line = _AUTOLINK.sub(r"\1", line)
    line = _HTML_TAG.sub("", line)
    line = _CODE_SPAN.sub(r"\2", line)
    line = _STRONG.sub(r"\2", line)
    line = _EMPHASIS_STAR.sub(r"\1", line)
    line = _EMPHASIS_UNDERSCORE.sub(r"\1", line)
    line = _STRIKE.sub(r"\1", line)
    return _ESCAPE.sub(r"\1", line)


class _MarkdownReader:
    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.headings = HeadingPath()
        self.first_h1 = ""
        self.first_heading = ""
        self.paragraph: list[str] = []
        # Raw source lines of the paragraph, for a setext underline to turn into a heading.
        self.paragraph_raw: list[str] = []

    def flush(self) -> None:
        text = clean_lines("\n".join(self.paragraph))
        if text:
            self.blocks.append(Block(text, None, self.headings.path))
        self.paragraph = []
        self.paragraph_raw = []

    def heading(self, level: int, raw: str) -> None:
        self.flush()
        title = clean_inline(strip_inline_markup(raw))
        self.headings.enter(level, title)
        if title:
            if level == 1 and not self.first_h1:
                self.first_h1 = title
            self.first_heading = self.first_heading or title
            self.blocks.append(Block(title, None, self.headings.path))

    def code(self, lines: list[str]) -> None:
        self.flush()
        # Code keeps its indentation (it carries meaning); blank lines go,
        # as inside every other block.
        body = "\n".join(line.rstrip() for line in textwrap.dedent("\n".join(lines)).split("\n") if line.strip())
        # Blocks never start or end with whitespace (dedent leaves a deeper
        # first line, and does not know NBSP or other Unicode spaces).
        body = body.strip()
        if body:
            self.blocks.append(Block(body, None, self.headings.path))

    def read(self, text: str) -> None:
        lines = normalise_newlines(text).split("\n")
        lines = _skip_front_matter(lines)
        index = 0
        while index < len(lines):
            line = lines[index]
            index += 1
            fence = _FENCE.match(line)
            if fence:
                marker = fence.group(1)
                code: list[str] = []
                while index < len(lines):
                    closing = lines[index].strip()
                    index += 1
                    if closing.startswith(marker) and not closing.strip(marker[0]):
                        break
                    code.append(lines[index - 1])
                self.code(code)
                continue
            if not line.strip():
                self.flush()
                continue
            atx = _ATX.match(line)
            if atx:
                self.heading(len(atx.group(1)), _strip_closing_hashes(line[atx.end():]))
                continue
            setext = _SETEXT.fullmatch(line)
            if setext and self.paragraph_raw and not _BULLET.match(self.paragraph_raw[-1]):
                level = 1 if setext.group(1).startswith("=") else 2
                raw = " ".join(self.paragraph_raw)
                self.paragraph = []
                self.paragraph_raw = []
                self.heading(level, raw)
                continue
            if _THEMATIC_BREAK.fullmatch(line):
                self.flush()
                continue
            if _LINK_DEFINITION.match(line) or _is_table_rule(line):
                continue
            self.paragraph_raw.append(line)
            self.paragraph.append(strip_inline_markup(_strip_line_markers(line)))
        self.flush()


def _skip_front_matter(lines: list[str]) -> list[str]:
    """Drop a YAML front-matter block ("---" ... "---") at the very top."""
    if not lines or lines[0].strip() != "---":
        return lines
    for index in range(1, min(len(lines), 200)):
        if lines[index].strip() in ("---", "..."):
            return lines[index + 1:]
    return lines


def _strip_closing_hashes(content: str) -> str:
    content = content.strip()
    stripped = content.rstrip("#")
    if stripped != content and (not stripped or stripped[-1] in " \t"):
        return stripped.rstrip()
    return content


def _strip_line_markers(line: str) -> str:
    line = _QUOTE.sub("", line, count=1) if line.lstrip().startswith(">") else line
    return _BULLET.sub(r"\1", line, count=1)


def _is_table_rule(line: str) -> bool:
    """The |---|:---:| row under a table header."""
    stripped = line.strip()
    return "-" in stripped and ("|" in stripped or ":" in stripped) and not stripped.strip("|:- \t")


def parse_markdown(text: str) -> ParsedDocument:
    reader = _MarkdownReader()
    reader.read(text)
    title = reader.first_h1 or reader.first_heading
    if not title and reader.blocks:
        title = reader.blocks[0].text.split("\n", 1)[0][:200]
    return ParsedDocument(kind=KIND_MARKDOWN, title=title, blocks=reader.blocks, page_count=None)
