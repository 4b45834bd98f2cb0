"""Bytes to text for the text-like formats, refusing what is really binary.

Order of trust: a byte-order mark, then strict UTF-8, then BOM-less UTF-16
(recognised by its NUL pattern), then a legacy East Asian encoding (GB18030,
Big5, Shift-JIS, EUC-KR …) when charset-normalizer finds one and the text
it gives reads as Chinese, Japanese or Korean, then cp1252/latin-1 for
legacy Western files.  cp1252 is never the guess for CJK text: GB18030 read
as cp1252 is indexed as "Ô±¹¤Äê¼Ù", and Shift-JIS looks binary.
Whatever decodes is still rejected when too much of it is control
characters: no real document is mostly ``\\x01``-``\\x1f``.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from ingestion.parsers.document import ParseError

EMPTY_MESSAGE = "The file is empty"
BINARY_MESSAGE = "The file looks like binary data of an unsupported type"

_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with the UTF-16 one.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Control characters real text does not contain.  Tab, LF, CR and FF are
# ordinary; ESC (ANSI colours in logs) and SUB (DOS end-of-file) turn up in
# genuine text files often enough to tolerate.  C1 controls (U+0080-U+009F)
# only appear when bytes were decoded as latin-1 that were not latin-1 text.
# Private-use code points (U+E000-U+F8FF) and U+FFFD are counted with them:
# random UTF-16 code units are ~10% private use and ~3% unpaired surrogates
# (decoded as U+FFFD), while real text has almost none of either.
_SUSPICIOUS = re.compile("[\x00-\x08\x0b\x0e-\x19\x1c-\x1f\x7f\x80-\x9f\ue000-\uf8ff\ufffd]")
# Random bytes are ~10% C0 controls; text with more than this is not text.
_MAX_CONTROL_RATIO = 0.02
_CHARSET = re.compile(rb"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.IGNORECASE)


@dataclass(frozen=True)
class DecodedText:
    text: str
    # True when no Unicode encoding fitted and cp1252/latin-1 was a guess.
    legacy: bool


def is_blank(data: bytes) -> bool:
    return not data.strip(b" \t\r\n\x0b\x0c")


def decode_text(data: bytes) -> DecodedText:
    """Decode text-like bytes; ParseError when empty or binary."""
    if is_blank(data):
        raise ParseError(EMPTY_MESSAGE)
    decoded = _decode(data)
    text = decoded.text.lstrip("\ufeff")
    if not text.strip():
        raise ParseError(EMPTY_MESSAGE)
    suspicious = len(_SUSPICIOUS.findall(text))
    if suspicious and suspicious / len(text) > _MAX_CONTROL_RATIO:
        raise ParseError(BINARY_MESSAGE)
    return DecodedText(text, decoded.legacy)


def _decode(data: bytes) -> DecodedText:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            # A BOM is a deliberate statement; a stray bad byte after it is
            # damage, not a reason to reject the whole file.
            return DecodedText(data[len(bom):].decode(encoding, errors="replace"), legacy=False)
    utf16 = _bomless_utf16(data)
    if utf16 is not None:
        return DecodedText(data.decode(utf16, errors="replace"), legacy=False)
    if b"\x00" in data:
        raise ParseError(BINARY_MESSAGE)
    try:
        return DecodedText(data.decode("utf-8"), legacy=False)
    except UnicodeDecodeError as exc:
        # A file cut in the middle of its last multi-byte character is still UTF-8.
        if exc.start >= len(data) - 3 and exc.reason in ("unexpected end of data", "invalid continuation byte"):
            return DecodedText(data.decode("utf-8", errors="replace"), legacy=False)
    cjk = _legacy_cjk(data)
    if cjk is not None:
        return cjk
    try:
        return DecodedText(data.decode("cp1252"), legacy=True)
    except UnicodeDecodeError:
        # cp1252 leaves five bytes undefined; latin-1 maps every byte.
        return DecodedText(data.decode("latin-1"), legacy=True)


# The multi-byte encodings of Chinese, Japanese and Korean, as charset-normalizer names them.
_CJK_ENCODINGS = frozenset({
    "gb18030", "gbk", "gb2312", "hz", "big5", "big5hkscs", "cp950", "shift_jis", "shift_jis_2004",
    "shift_jisx0213", "cp932", "euc_jp", "euc_jis_2004", "euc_jisx0213", "iso2022_jp", "iso2022_jp_2",
    "euc_kr", "cp949", "johab", "iso2022_kr",
})
# What CJK prose is written in: ideographs, kana, hangul, CJK and full-width punctuation.  Half-width
# katakana are left out: Western accented letters read as Shift-JIS come out as those.
_CJK_PROSE = re.compile("[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff01-\uff60]")


def _legacy_cjk(data: bytes) -> DecodedText | None:
    """The text of a legacy CJK-encoded file, or None when it is not one.

    charset-normalizer names the encoding (it weighs how plausible the text
    is in each language, which a strict decode alone cannot: Western text
    often decodes as GBK too); the result must also read as CJK prose —
    most of its non-ASCII characters ideographs, kana or hangul.
    """
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None or best.encoding not in _CJK_ENCODINGS:
        return None
    text = data.decode(best.encoding, errors="replace")
    non_ascii = sum(1 for char in text if ord(char) > 127)
    if not non_ascii or len(_CJK_PROSE.findall(text)) < 0.6 * non_ascii:
        return None
    return DecodedText(text, legacy=True)


def _bomless_utf16(data: bytes) -> str | None:
    """UTF-16 without a BOM: mostly-ASCII text leaves every other byte NUL."""
    sample = data[:4096]
    if len(sample) < 4 or len(sample) % 2:
        return None
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    half = len(sample) // 2
    # Some non-ASCII characters (U+0100, U+4E00...) put a NUL on the other side too.
    if odd_nuls > 0.4 * half and even_nuls < 0.05 * half:
        return "utf-16-le"
    if even_nuls > 0.4 * half and odd_nuls < 0.05 * half:
        return "utf-16-be"
    return None


def declared_charset(data: bytes) -> str | None:
    """The ``charset=`` an HTML page declares near its top, if Python knows it."""
    match = _CHARSET.search(data[:4096])
    if match is None:
        return None
    try:
        return codecs.lookup(match.group(1).decode("ascii")).name
    except (LookupError, UnicodeDecodeError):
        return None
