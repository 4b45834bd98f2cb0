"""The parser output: a document as an ordered list of text blocks."""

from __future__ import annotations

from dataclasses import dataclass, field

KIND_PDF = "pdf"
KIND_DOCX = "docx"
KIND_HTML = "html"
KIND_MARKDOWN = "markdown"
KIND_TEXT = "text"

SUPPORTED_KINDS: tuple[str, ...] = (KIND_PDF, KIND_DOCX, KIND_HTML, KIND_MARKDOWN, KIND_TEXT)

# Joins heading levels into the path stored on every block ("Install > Linux").
HEADING_SEPARATOR = " > "


class ParseError(Exception):
    """A user-readable reason the file cannot be parsed (shown in the UI/API as the job's error).

    ``reason`` is a stable code for the failure's kind (``IngestionJob.FailureReason``), counted by
    ``/metrics``: most parse errors are ``unreadable``; budgets and limits name themselves.
    """

    def __init__(self, message: str, *, reason: str = "unreadable") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Block:
    """A paragraph-ish unit of text.

    ``text`` is whitespace-normalised: runs of spaces collapse to one, lines
    are stripped, and line breaks inside the block are kept as ``"\\n"``.
    """

    text: str
    page: int | None
    heading: str


@dataclass(frozen=True)
class ParsedDocument:
    kind: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    page_count: int | None = None


class HeadingPath:
    """The stack of open headings while walking a document top to bottom.

    A level-``n`` heading closes every open heading of level ``n`` or
    deeper, so "H1 > H2" followed by another H2 becomes "H1 > H2'", and a
    document that skips levels (H1 then H3) still nests sensibly.
    """

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []

    def enter(self, level: int, title: str) -> None:
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        if title:
            self._stack.append((level, title))

    @property
    def path(self) -> str:
        return HEADING_SEPARATOR.join(title for _, title in self._stack)
