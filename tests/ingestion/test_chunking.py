"""Chunking with the embedder's real tokenizer: sizes, offsets, pages, headings, coverage."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.chunking import BLOCK_SEPARATOR, ChunkDraft, chunk_document, full_text
from ingestion.parsers import ParsedDocument
from ingestion.parsers.document import Block


def _doc(blocks: list[Block], kind: str = "text") -> ParsedDocument:
    return ParsedDocument(kind=kind, title="t", blocks=blocks, page_count=None)


def _tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _block_spans(doc: ParsedDocument) -> list[tuple[int, int, Block]]:
    spans, position = [], 0
    for block in doc.blocks:
        spans.append((position, position + len(block.text), block))
        position += len(block.text) + len(BLOCK_SEPARATOR)
    return spans


def check_invariants(doc: ParsedDocument, chunks: list[ChunkDraft], tokenizer: Any, size: int) -> None:
    text = full_text(doc)
    spans = _block_spans(doc)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert [c.char_start for c in chunks] == sorted(c.char_start for c in chunks)
    covered = bytearray(len(text))
    for chunk in chunks:
        # The stored offsets are the truth: a citation can highlight exactly this slice.
        assert chunk.text == text[chunk.char_start:chunk.char_end]
        assert chunk.text.strip(), "empty chunk"
        assert chunk.token_count == _tokens(tokenizer, chunk.text) <= size
        # One page, one heading section: every block the chunk touches has the chunk's page and heading.
        touched = [b for start, end, b in spans if start < chunk.char_end and chunk.char_start < end]
        assert touched
        assert {b.page for b in touched} == {chunk.page}
        assert {b.heading for b in touched} == {chunk.heading}
        covered[chunk.char_start:chunk.char_end] = b"\x01" * (chunk.char_end - chunk.char_start)
    # Nothing a reader could search for is dropped.
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not missing, f"uncovered text: {text[missing[0]:missing[0] + 40]!r}"


def test_small_blocks_of_one_section_are_packed_into_one_chunk(tokenizer: Any) -> None:
    doc = _doc([Block("Alpha paragraph.", 1, "Intro"), Block("Beta paragraph.", 1, "Intro")])
    chunks = chunk_document(doc, tokenizer, size_tokens=50, overlap_tokens=5)
    assert len(chunks) == 1
    assert chunks[0].text == "Alpha paragraph.\n\nBeta paragraph."
    check_invariants(doc, chunks, tokenizer, 50)


def test_a_chunk_never_spans_two_pages_or_two_headings(tokenizer: Any) -> None:
    doc = _doc([
        Block("Page one text.", 1, ""),
        Block("Page two text.", 2, ""),
        Block("Still page two, new heading.", 2, "Safety"),
    ], kind="pdf")
    chunks = chunk_document(doc, tokenizer, size_tokens=100, overlap_tokens=10)
    assert [(c.page, c.heading) for c in chunks] == [(1, ""), (2, ""), (2, "Safety")]
    check_invariants(doc, chunks, tokenizer, 100)


def test_long_text_is_cut_at_sentence_ends_with_overlap(tokenizer: Any) -> None:
    sentences = [f"Sentence number {i} talks about the pressure valve and its gauge." for i in range(80)]
    doc = _doc([Block(" ".join(sentences), 3, "Valves")])
    chunks = chunk_document(doc, tokenizer, size_tokens=64, overlap_tokens=16)
    assert len(chunks) > 5
    check_invariants(doc, chunks, tokenizer, 64)
    for previous, chunk in zip(chunks, chunks[1:], strict=False):
        assert chunk.char_start < previous.char_end, "consecutive chunks of one section overlap"
        overlap = doc.blocks[0].text[chunk.char_start:previous.char_end]
        assert _tokens(tokenizer, overlap) <= 16 + 2
    # Cuts prefer sentence ends over arbitrary word boundaries.
    assert sum(c.text.rstrip().endswith(".") for c in chunks[:-1]) >= len(chunks[:-1]) * 0.8


def test_no_overlap_means_chunks_tile_the_text(tokenizer: Any) -> None:
    doc = _doc([Block(" ".join(f"word{i}" for i in range(2000)), None, "")])
    chunks = chunk_document(doc, tokenizer, size_tokens=100, overlap_tokens=0)
    check_invariants(doc, chunks, tokenizer, 100)
    for previous, chunk in zip(chunks, chunks[1:], strict=False):
        assert chunk.char_start >= previous.char_end


def test_a_word_longer_than_a_chunk_is_cut_at_token_boundaries(tokenizer: Any) -> None:
    # WordPiece turns a word over 100 characters into one [UNK]; this one is 95 and many pieces.
    word = "qzxvkjwpfh" * 9 + "qzxvk"
    assert _tokens(tokenizer, word) > 20
    doc = _doc([Block(f"{word} tail", None, "")])
    chunks = chunk_document(doc, tokenizer, size_tokens=8, overlap_tokens=2)
    assert len(chunks) > 2
    check_invariants(doc, chunks, tokenizer, 8)


def test_chinese_text_is_chunked_by_tokens_not_by_sentence(tokenizer: Any) -> None:
    text = "锅炉的安全阀每年必须由持证检验员校验一次。" * 60
    doc = _doc([Block(text, 1, "安全")])
    chunks = chunk_document(doc, tokenizer, size_tokens=60, overlap_tokens=10)
    assert len(chunks) > 5
    check_invariants(doc, chunks, tokenizer, 60)


def test_bad_sizes_are_refused(tokenizer: Any) -> None:
    doc = _doc([Block("text", None, "")])
    with pytest.raises(ValueError):
        chunk_document(doc, tokenizer, size_tokens=0)
    with pytest.raises(ValueError):
        chunk_document(doc, tokenizer, size_tokens=10, overlap_tokens=10)
    with pytest.raises(ValueError):
        chunk_document(doc, tokenizer, size_tokens=10, overlap_tokens=-1)


def test_an_empty_document_has_no_chunks(tokenizer: Any) -> None:
    assert chunk_document(_doc([]), tokenizer) == []


_WORDS = st.sampled_from([
    "valve", "pressure", "the", "Kessel", "naïve", "锅炉", "安全阀", "co-operate", "e.g.", "3.14", "ü", "🙂",
    "supercalifragilisticexpialidocious", "x" * 40, "end.", "why?", "\n", "-", "(a)",
])


@st.composite
def documents(draw: st.DrawFn) -> ParsedDocument:
    blocks = []
    for _ in range(draw(st.integers(1, 8))):
        words = draw(st.lists(_WORDS, min_size=1, max_size=120))
        text = " ".join(words).strip() or "x"
        text = "\n".join(line.strip() for line in text.split("\n") if line.strip()) or "x"
        page = draw(st.sampled_from([None, 1, 2, 3]))
        heading = draw(st.sampled_from(["", "A", "A > B"]))
        blocks.append(Block(text, page, heading))
    return _doc(blocks)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), size=st.integers(8, 120), overlap_fraction=st.floats(0, 0.5))
def test_chunk_invariants_hold_for_any_document(tokenizer: Any, doc: ParsedDocument, size: int,
                                                overlap_fraction: float) -> None:
    overlap = int(size * overlap_fraction)
    chunks = chunk_document(doc, tokenizer, size_tokens=size, overlap_tokens=overlap)
    check_invariants(doc, chunks, tokenizer, size)
