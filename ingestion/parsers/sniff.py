"""What kind of document some bytes are, judged from the bytes alone.

File names and client-supplied content types are never consulted: they are
easy to get wrong and easy to forge, and the parser that runs must be the
one that fits the content.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass

from ingestion.parsers.decoding import EMPTY_MESSAGE, DecodedText, decode_text, is_blank
from ingestion.parsers.document import (
    KIND_DOCX,
    KIND_HTML,
    KIND_MARKDOWN,
    KIND_PDF,
    KIND_TEXT,
    ParseError,
)

# Real PDF readers accept the header anywhere in the first KiB (mail
# gateways and broken uploads prepend junk); so does pdfium.
PDF_MAGIC = b"%PDF-"
PDF_HEADER_WINDOW = 1024
_PDF_HEADER = re.compile(rb"%PDF-\d\.\d")
ZIP_MAGIC = b"PK\x03\x04"
DOCX_MAIN_PART = "word/document.xml"
_IMAGE = "Images are not supported (text recognition is not enabled); upload a PDF or text document"
_ARCHIVE = "Compressed archives are not supported; upload the documents inside it instead"
# Formats people upload by mistake, with a reason more useful than "binary".
_KNOWN_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", _IMAGE),
    (b"\xff\xd8\xff", _IMAGE),
    (b"GIF87a", _IMAGE),
    (b"GIF89a", _IMAGE),
    (b"II*\x00", _IMAGE),
    (b"MM\x00*", _IMAGE),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
     "Legacy Microsoft Office files (.doc, .xls, .ppt) are not supported; save it as DOCX or PDF"),
    (b"{\\rtf", "RTF files are not supported; save it as DOCX or PDF"),
    (b"\x1f\x8b", _ARCHIVE),
    (b"7z\xbc\xaf\x27\x1c", _ARCHIVE),
    (b"Rar!\x1a\x07", _ARCHIVE),
    (b"BZh", _ARCHIVE),
    (b"\xfd7zXZ\x00", _ARCHIVE),
)
# Markdown and HTML are decided on the start of the text; signals far
# into a large file add nothing and would cost time.
_SNIFF_CHARS = 64 * 1024
_HTML_WINDOW = 2048

_LEADING_JUNK = re.compile(r"\s*(?:<\?xml[^>]{0,500}\?>|<!--.{0,5000}?-->)?", re.DOTALL)
_HTML_DOCUMENT_TAG = re.compile(r"<(?:html|head|body)[\s>/]", re.IGNORECASE)
_HTML_BLOCK_TAG = re.compile(
    r"<(?:p|div|table|h[1-6]|ul|ol|li|section|article|main|header|footer|nav|meta|title|link|span|br|img|form|a)"
    r"(?:\s[^<>]{0,500})?/?>",
    re.IGNORECASE,
)

_MD_ATX = re.compile(r"^ {0,3}#{1,6}[ \t]+\S", re.MULTILINE)
_MD_FENCE = re.compile(r"^ {0,3}(?:```|~~~)", re.MULTILINE)
_MD_SETEXT_UNDERLINE = re.compile(r" {0,3}(?:=+|-{2,})[ \t]*")
_MD_LIST = re.compile(r"^ {0,3}(?:[-*+]|\d{1,9}[.)])[ \t]+\S", re.MULTILINE)
_MD_LINK = re.compile(r"!?\[[^\]\n]{1,300}\]\([^)\s]{1,1000}(?:\s[^)\n]{0,300})?\)")
_MD_INLINE = re.compile(
    r"\*\*[^*\n]{1,300}\*\*|__[^_\n]{1,300}__|`[^`\n]{1,300}`|(?<![\w*])\*[^*\s][^*\n]{0,300}\*(?![\w*])"
)


@dataclass(frozen=True)
class Detection:
    kind: str
    # The decoded text for the text-like kinds, so parsing does not decode twice.
    decoded: DecodedText | None = None


def sniff(data: bytes) -> str:
    """The document kind of ``data``, from its content only; ParseError if unsupported."""
    return detect(data).kind


def detect(data: bytes) -> Detection:
    if is_blank(data):
        raise ParseError(EMPTY_MESSAGE)
    if _has_pdf_header(data):
        return Detection(KIND_PDF)
    if data.startswith(ZIP_MAGIC):
        zip_kind = _zip_kind(data)
        if zip_kind is not None:
            return Detection(zip_kind)
    for signature, message in _KNOWN_SIGNATURES:
        if data.startswith(signature):
            raise ParseError(message)
    decoded = decode_text(data)
    return Detection(classify_text(decoded.text), decoded)


def _has_pdf_header(data: bytes) -> bool:
    if data.startswith(PDF_MAGIC):
        return True
    # Further in, insist on a version number too, so a text file that merely
    # mentions "%PDF-" near its top is not taken for a PDF.
    return _PDF_HEADER.search(data, 0, PDF_HEADER_WINDOW + 16) is not None


def _zip_kind(data: bytes) -> str | None:
    """"docx" for a Word document; ParseError for other or broken archives; None if not a ZIP after all."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        # No readable central directory.  A truncated DOCX still names its
        # parts in the local headers at the front; anything else that merely
        # starts with "PK\x03\x04" is left to the text/binary checks.
        head = data[:4096]
        if b"[Content_Types].xml" in head or b"word/" in head:
            raise ParseError("The DOCX file is damaged or truncated") from None
        if b"\x00" in head:
            raise ParseError("The file looks like a damaged ZIP archive, which is not supported") from None
        return None
    if DOCX_MAIN_PART in names:
        return KIND_DOCX
    raise ParseError("ZIP archives other than DOCX are not supported")


def classify_text(text: str) -> str:
    """html, markdown or text for decoded text."""
    sample = text[:_SNIFF_CHARS].lstrip("\ufeff")
    if _looks_like_html(sample):
        return KIND_HTML
    if _looks_like_markdown(sample):
        return KIND_MARKDOWN
    return KIND_TEXT


def _looks_like_html(sample: str) -> bool:
    start = sample[: _HTML_WINDOW * 4]
    # Skip an XML declaration and leading comments, as a browser would.
    for _ in range(8):
        match = _LEADING_JUNK.match(start)
        if match is None or match.end() == 0:
            break
        start = start[match.end():]
    head = start[:_HTML_WINDOW].lower()
    if head.startswith("<!doctype html") or head.startswith("<html"):
        return True
    if _HTML_DOCUMENT_TAG.search(head):
        return True
    # A fragment ("<p>...</p>") with no markdown structure of its own; a
    # README that opens with <p align="center"> and then has "# Title" is markdown.
    block_tags = len(_HTML_BLOCK_TAG.findall(head))
    starts_with_tag = head.startswith("<") and _HTML_BLOCK_TAG.match(head) is not None
    if (starts_with_tag or block_tags >= 3) and not _has_markdown_structure(sample):
        return True
    return False


def _has_markdown_structure(sample: str) -> bool:
    return bool(_MD_ATX.search(sample) or _MD_FENCE.search(sample) or _has_setext_heading(sample))


def _has_setext_heading(sample: str) -> bool:
    # Line by line rather than one multi-line regex, which would backtrack
    # quadratically on very long lines.
    previous = ""
    for line in sample.split("\n"):
        if previous.strip() and _MD_SETEXT_UNDERLINE.fullmatch(line.rstrip("\r")) and not _MD_LIST.match(previous):
            return True
        previous = line
    return False


def _looks_like_markdown(sample: str) -> bool:
    if _has_markdown_structure(sample):
        return True
    links = len(_MD_LINK.findall(sample))
    inline = len(_MD_INLINE.findall(sample))
    has_list = _MD_LIST.search(sample) is not None
    return links >= 2 or (has_list and (links + inline) >= 1) or (links + inline) >= 3
