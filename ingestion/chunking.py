"""Split a parsed document into passages sized in the embedder's own tokens.

A chunk never spans two pages (so a citation has one page) nor two heading
sections; consecutive small blocks of one page and heading are packed
together.  Cuts prefer, within the last quarter of a window, a paragraph
break, then a sentence end, then a line break, then a word boundary, and
only then an arbitrary token boundary.  Chunk text is always an exact
slice of ``full_text(doc)``, so offsets stored with a chunk are truthful.

Speed: every block is tokenised once, in batched calls; boundaries are
classified lazily, only in the part of a window where a cut is being
chosen.  Each chunk's text is then re-tokenised (again batched) to
record its true token count, because a slice does not always tokenise like
the same span inside the whole text (a word cut in the middle, Unicode
normalisation); sections where that count would exceed the size are
re-planned with exact counts.
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from ingestion.parsers import ParsedDocument

BLOCK_SEPARATOR = "\n\n"
# The window's last quarter is where a natural boundary is looked for.
_PREFERRED_ZONE = 0.25
# Characters tokenised per batched tokenizer call: large enough to amortise
# the call, small enough that offsets of a huge document never sit in memory at once.
_BATCH_CHARS = 1_000_000
# How far (in tokens) the start of an overlapping chunk may move forward to
# land on the start of a word instead of inside one.
_ALIGN_TOKENS = 8
# A longer block (a 50 MB file that is one line) is tokenised in pieces of about this many characters, cut
# at whitespace where there is some: the tokenizer's offsets of a whole block are Python tuples, gigabytes of
# them for such a file, while a piece's become a small array at once.
_PIECE_CHARS = 100_000


@dataclass(frozen=True)
class ChunkDraft:
    ordinal: int
    text: str
    page: int | None
    heading: str
    char_start: int
    char_end: int
    token_count: int


def full_text(doc: ParsedDocument) -> str:
    """The document's stored text: blocks joined by a blank line.  Chunk offsets refer to it."""
    return BLOCK_SEPARATOR.join(block.text for block in doc.blocks)


@dataclass
class _Section:
    """Consecutive blocks that share a page and a heading path."""

    page: int | None
    heading: str
    # (start, end) of each block's text in the full text.
    spans: list[tuple[int, int]]

    @property
    def start(self) -> int:
        return self.spans[0][0]

    @property
    def end(self) -> int:
        return self.spans[-1][1]

    @property
    def chars(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class _Piece:
    """A planned chunk before ordinals are assigned."""

    page: int | None
    heading: str
    char_start: int
    char_end: int
    token_count: int


def chunk_document(
    doc: ParsedDocument, tokenizer: Any, *, size_tokens: int = 200, overlap_tokens: int = 40
) -> list[ChunkDraft]:
    """Chunks of at most ``size_tokens`` tokens of ``tokenizer`` (no special tokens).

    ``tokenizer`` is a Hugging Face fast tokenizer (it must return offset
    mappings).  Consecutive chunks of one section overlap by at most
    ``overlap_tokens`` tokens: the next chunk starts that many tokens before
    the previous one ended, moved forward by a few tokens if that lands it
    at the start of a word.
    """
    if size_tokens <= 0:
        raise ValueError("size_tokens must be positive")
    if not 0 <= overlap_tokens < size_tokens:
        raise ValueError("overlap_tokens must be at least 0 and smaller than size_tokens")
    text = full_text(doc)
    pieces: list[_Piece] = []
    for batch in _batches(_sections(doc)):
        pieces.extend(_chunk_batch(text, batch, tokenizer, size_tokens, overlap_tokens))
    return [
        ChunkDraft(
            ordinal=ordinal,
            text=text[piece.char_start:piece.char_end],
            page=piece.page,
            heading=piece.heading,
            char_start=piece.char_start,
            char_end=piece.char_end,
            token_count=piece.token_count,
        )
        for ordinal, piece in enumerate(pieces)
    ]


def _sections(doc: ParsedDocument) -> Iterator[_Section]:
    position = 0
    current: _Section | None = None
    for block in doc.blocks:
        span = (position, position + len(block.text))
        position = span[1] + len(BLOCK_SEPARATOR)
        if current is not None and current.page == block.page and current.heading == block.heading:
            current.spans.append(span)
            continue
        if current is not None:
            yield current
        current = _Section(block.page, block.heading, [span])
    if current is not None:
        yield current


def _batches(sections: Iterator[_Section]) -> Iterator[list[_Section]]:
    batch: list[_Section] = []
    chars = 0
    for section in sections:
        batch.append(section)
        chars += section.chars
        if chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _chunk_batch(
    text: str, sections: list[_Section], tokenizer: Any, size: int, overlap: int
) -> list[_Piece]:
    offsets = _token_offsets(text, sections, tokenizer)
    planned = [list(_plan(text, section, starts, ends, size, overlap)) for section, (starts, ends) in
               zip(sections, offsets, strict=True)]
    flat = [piece for pieces in planned for piece in pieces]
    counts = _count_tokens(tokenizer, [text[p.char_start:p.char_end] for p in flat])
    result: list[_Piece] = []
    index = 0
    for section, (starts, ends), pieces in zip(sections, offsets, planned, strict=True):
        section_counts = counts[index:index + len(pieces)]
        index += len(pieces)
        if all(count <= size for count in section_counts):
            result.extend(_with_count(p, c) for p, c in zip(pieces, section_counts, strict=True))
            continue
        # A slice tokenised on its own came out longer than its span in the
        # whole text: plan this section again, measuring every chunk.
        def measure(start: int, end: int) -> int:
            return _count_tokens(tokenizer, [text[start:end]])[0]

        result.extend(_plan(text, section, starts, ends, size, overlap, measure))
    return result


def _with_count(piece: _Piece, count: int) -> _Piece:
    return _Piece(piece.page, piece.heading, piece.char_start, piece.char_end, count)


def _token_offsets(
    text: str, sections: Sequence[_Section], tokenizer: Any
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(starts, ends) of every token of each section, as offsets into the full text.

    Tokenised a group of pieces at a time (``_pieces``, ``_BATCH_CHARS`` per
    group), each piece's offsets turned into an array at once: memory stays
    bounded by the group, whatever the size of one block.
    """
    pieces = [(number, start, end) for number, section in enumerate(sections)
              for block_start, block_end in section.spans for start, end in _pieces(text, block_start, block_end)]
    parts: list[list[np.ndarray]] = [[] for _ in sections]
    for group in _groups(pieces):
        mappings = _tokenize(tokenizer, [text[start:end] for _, start, end in group], offsets=True)
        for (number, start, _), mapping in zip(group, mappings, strict=True):
            if mapping:
                parts[number].append(np.asarray(mapping, dtype=np.int64).reshape(-1, 2) + start)
    result: list[tuple[np.ndarray, np.ndarray]] = []
    for section_parts in parts:
        pairs = np.concatenate(section_parts) if section_parts else np.zeros((0, 2), dtype=np.int64)
        # Zero-width "tokens" cover no text and cannot anchor a cut.
        pairs = pairs[pairs[:, 1] > pairs[:, 0]]
        result.append((pairs[:, 0].copy(), pairs[:, 1].copy()))
    return result


def _pieces(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` in pieces of at most ``_PIECE_CHARS``, cut after whitespace where the piece has some."""
    while end - start > _PIECE_CHARS:
        limit = start + _PIECE_CHARS
        cut = max(text.rfind(" ", start, limit), text.rfind("\n", start, limit))
        cut = cut + 1 if cut > start + _PIECE_CHARS // 2 else limit
        yield start, cut
        start = cut
    if end > start:
        yield start, end


def _groups(pieces: list[tuple[int, int, int]]) -> Iterator[list[tuple[int, int, int]]]:
    """Consecutive ``(section, start, end)`` pieces of about ``_BATCH_CHARS`` characters in all."""
    group: list[tuple[int, int, int]] = []
    chars = 0
    for piece in pieces:
        group.append(piece)
        chars += piece[2] - piece[1]
        if chars >= _BATCH_CHARS:
            yield group
            group, chars = [], 0
    if group:
        yield group


_backends: weakref.WeakKeyDictionary[Any, Tokenizer] = weakref.WeakKeyDictionary()
_backends_lock = threading.Lock()


def _backend(tokenizer: Any) -> Tokenizer | None:
    """A private copy of a fast tokenizer's Rust tokenizer, without truncation or padding; None for a slow one.

    The chunker's own, for two reasons: the embedder sets truncation on its
    tokenizer for every ``encode`` — in the personal shape from the web
    thread too, while the worker thread chunks — and a truncated tokenisation
    would cut a document's offsets short; and calling it directly skips the
    per-call settings and the Python lists of ids of the transformers call
    (a fifth of the chunker's time).  Same normaliser, pre-tokeniser and
    model: the same tokens.
    """
    backend_of = getattr(tokenizer, "backend_tokenizer", None)
    if backend_of is None:
        return None
    with _backends_lock:
        backend = _backends.get(tokenizer)
        if backend is None:
            backend = Tokenizer.from_str(backend_of.to_str())
            backend.no_truncation()
            backend.no_padding()
            _backends[tokenizer] = backend
        return backend


def _tokenize(tokenizer: Any, texts: list[str], *, offsets: bool) -> list[Any]:
    backend = _backend(tokenizer)
    if backend is not None:
        if offsets:
            return [encoding.offsets for encoding in backend.encode_batch(texts, add_special_tokens=False)]
        return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=False)]
    encoded = tokenizer(
        texts,
        add_special_tokens=False,
        return_offsets_mapping=offsets,
        return_attention_mask=False,
        return_token_type_ids=False,
        # Long blocks exceed the model's maximum length by design; that
        # warning is about feeding the model, which chunks never do unsplit.
        verbose=False,
    )
    return list(encoded["offset_mapping"] if offsets else encoded["input_ids"])


def _count_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    counts: list[int] = []
    for first in range(0, len(texts), 4096):  # a bounded batch of chunk texts at a time
        counts.extend(len(ids) for ids in _tokenize(tokenizer, texts[first:first + 4096], offsets=False))
    return counts


# Kinds of cut between two tokens, from least to most preferred.
_NO_BOUNDARY = 0
_WORD = 1
_LINE = 2
_SENTENCE = 3
_PARAGRAPH = 4

_SENTENCE_ENDS = frozenset(".!?…")
# CJK full stops end a sentence with no space after them.
_CJK_SENTENCE_ENDS = frozenset("。！？")
_CLOSERS = frozenset("\"'”’)]»」』）》")
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")
# Ideographs and kana: text in these scripts has no spaces, so every one of
# these characters is a word of its own for cutting purposes.
_CJK_RANGES = (
    (0x2E80, 0x2FDF), (0x3040, 0x30FF), (0x3100, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF), (0x20000, 0x3134F),
)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def _is_word_char(char: str) -> bool:
    return char.isalnum() and not _is_cjk(char)


class _Cuts:
    """Classifies the boundary before token ``k`` of a section (1 <= k < n).

    Evaluated lazily, only where a cut is being considered: a chunk looks at
    a quarter of its window, so most boundaries are never examined.
    """

    def __init__(self, text: str, starts: np.ndarray, ends: np.ndarray) -> None:
        self._text = text
        # Plain lists: indexing them one at a time is faster than numpy scalars.
        self._starts: list[int] = starts.tolist()
        self._ends: list[int] = ends.tolist()

    def kind(self, k: int) -> int:
        text = self._text
        gap_from = self._ends[k - 1]
        gap_to = self._starts[k]
        gap = text[gap_from:gap_to]
        if "\n" in gap and _PARAGRAPH_BREAK.search(gap):
            return _PARAGRAPH
        if self._ends_sentence(gap_from, gap):
            return _SENTENCE
        if "\n" in gap:
            return _LINE
        if gap:
            return _WORD
        before, after = text[gap_from - 1], text[gap_to]
        return _NO_BOUNDARY if _is_word_char(before) and _is_word_char(after) else _WORD

    def _ends_sentence(self, gap_from: int, gap: str) -> bool:
        text = self._text
        last = gap_from - 1
        # Step back over closing quotes and brackets: 'He said "stop."' ends a sentence.
        floor = max(0, last - 3)
        while last > floor and text[last] in _CLOSERS:
            last -= 1
        char = text[last]
        if char in _CJK_SENTENCE_ENDS:
            return True
        return char in _SENTENCE_ENDS and gap[:1].isspace()

    def best_cut(self, low: int, high: int) -> int | None:
        """The most preferred cut in [low, high] (the latest among equals), or None if only mid-word cuts."""
        best, best_kind = None, _NO_BOUNDARY
        for k in range(high, low - 1, -1):
            kind = self.kind(k)
            if kind > best_kind:
                best, best_kind = k, kind
                if kind == _PARAGRAPH:
                    break
        return best

    def last_word_cut(self, low: int, high: int) -> int | None:
        for k in range(high, low - 1, -1):
            if self.kind(k) != _NO_BOUNDARY:
                return k
        return None

    def first_word_cut(self, low: int, high: int) -> int | None:
        for k in range(low, high + 1):
            if self.kind(k) != _NO_BOUNDARY:
                return k
        return None


def _choose_end(cuts: _Cuts, first: int, n: int, size: int) -> int:
    """Exclusive end token of the chunk that starts at token ``first``."""
    limit = first + size
    if limit >= n:
        return n
    zone = first + max(1, math.ceil(size * (1 - _PREFERRED_ZONE)))
    cut = cuts.best_cut(zone, limit)
    if cut is not None:
        return cut
    # No boundary at all in the zone (one very long word): the last word
    # boundary earlier in the window, else a cut between two of its tokens.
    cut = cuts.last_word_cut(first + 1, zone - 1)
    return cut if cut is not None else limit


def _next_start(cuts: _Cuts, first: int, end: int, overlap: int) -> int:
    start = max(end - overlap, first + 1)
    if start >= end:
        return end
    aligned = cuts.first_word_cut(start, min(end - 1, start + _ALIGN_TOKENS))
    return aligned if aligned is not None else start


def _plan(
    text: str,
    section: _Section,
    starts: np.ndarray,
    ends: np.ndarray,
    size: int,
    overlap: int,
    measure: Callable[[int, int], int] | None = None,
) -> Iterator[_Piece]:
    """The chunks of one section.

    Without ``measure`` a chunk's size is its number of tokens in the whole
    text; with it, each chunk is measured (tokenised on its own) and shrunk
    until it fits.
    """
    n = len(starts)
    if n == 0:
        # Nothing the tokenizer can see (only characters it drops): no passage to embed.
        return
    if n <= size and measure is None:
        span = _span(text, section, starts, 0, n)
        if span is not None:
            yield _Piece(section.page, section.heading, span[0], span[1], n)
        return
    cuts = _Cuts(text, starts, ends)
    first = 0
    while first < n:
        end = _choose_end(cuts, first, n, size)
        span = _span(text, section, starts, first, end)
        count = end - first
        if measure is not None:
            while span is not None:
                count = measure(*span)
                if count <= size or end - first <= 1:
                    break
                end = max(first + 1, end - max(1, count - size))
                span = _span(text, section, starts, first, end)
        if span is not None:
            yield _Piece(section.page, section.heading, span[0], span[1], count)
        if end >= n:
            return
        first = _next_start(cuts, first, end, overlap)


def _span(text: str, section: _Section, starts: np.ndarray, first: int, end: int) -> tuple[int, int] | None:
    """Character range of tokens ``first..end-1``, stripped of surrounding whitespace.

    The range runs up to the next token's start (or the section's end), so
    characters the tokenizer skipped are still inside some chunk.
    """
    char_start = section.start if first == 0 else int(starts[first])
    char_end = section.end if end >= len(starts) else int(starts[end])
    piece = text[char_start:char_end]
    stripped = piece.strip()
    if not stripped:
        return None
    char_start += len(piece) - len(piece.lstrip())
    return char_start, char_start + len(stripped)
