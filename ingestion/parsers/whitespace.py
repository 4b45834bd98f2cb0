"""Whitespace normalisation and paragraph splitting shared by the parsers."""

from __future__ import annotations

import re

# Invisible or control characters that only get in the way of search: C0
# controls other than tab/newline, DEL, BOMs that survived decoding, the
# non-characters pdfium uses as markers, soft hyphens and zero-width spaces.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f\u00ad\u200b\u2060\ufeff\ufffe\uffff]")
# Any whitespace except the newline (tabs, NBSP, ideographic space, \r, \v...).
_SPACES = re.compile(r"[^\S\n]+")
# A blank line: two newlines with only spaces between them.
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")


def normalise_newlines(text: str) -> str:
    """CRLF/CR become LF; a form feed (a page break in plain text) becomes a blank line."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n").replace("\u2029", "\n\n").replace(
        "\u2028", "\n"
    )


def clean_inline(text: str) -> str:
    """One line of text: invisible characters dropped, whitespace runs collapsed, stripped."""
    return _SPACES.sub(" ", _INVISIBLE.sub("", text)).strip()


def clean_lines(text: str) -> str:
    """A paragraph: each line cleaned, empty lines dropped, lines kept apart by ``"\\n"``."""
    lines = (clean_inline(line) for line in normalise_newlines(text).split("\n"))
    return "\n".join(line for line in lines if line)


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines, each cleaned; empty paragraphs dropped."""
    paragraphs = (clean_lines(part) for part in _BLANK_LINE.split(normalise_newlines(text)))
    return [p for p in paragraphs if p]
