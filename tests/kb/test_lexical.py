"""BM25Index and tokenize: scores against rank-bm25, mutation, masks, persistence.

The reference is ``rank_bm25.BM25Okapi`` with its idf replaced by Lucene's
non-negative ``ln(1 + (N - n + 0.5) / (n + 0.5))``: same k1, b and tf
normalisation, so every document's score must agree to float32 precision.
"""

from __future__ import annotations

import math
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rank_bm25 import BM25Okapi

from kb.retrieval.lexical import BM25Index
from kb.retrieval.tokenize import STOPWORDS, tokenize


class LuceneBM25(BM25Okapi):
    """rank-bm25's Okapi scorer with Lucene's idf (no epsilon floor needed: it is never negative)."""

    def _calc_idf(self, nd: dict[str, int]) -> None:
        for word, freq in nd.items():
            self.idf[word] = math.log(1.0 + (self.corpus_size - freq + 0.5) / (freq + 0.5))


def scores_by_id(index: BM25Index, query: list[str]) -> dict[int, float]:
    ids, scores = index.search(query, max(len(index), 1))
    return dict(zip(ids.tolist(), scores.tolist(), strict=True))


def assert_matches_reference(
    index: BM25Index, ids: list[int], docs: list[list[str]], queries: list[list[str]], k1: float, b: float
) -> None:
    reference = LuceneBM25(docs, k1=k1, b=b)
    for query in queries:
        # rank-bm25 computes 0/0 = nan for a document without the term when
        # its length normaliser is 0 (k1 = 0, or b = 1 on an empty document);
        # such a document scores 0.  Sum term by term, as get_scores does.
        with np.errstate(invalid="ignore"):
            expected = sum(np.nan_to_num(reference.get_scores([q]), nan=0.0) for q in query)
        got_map = scores_by_id(index, query)
        got = np.array([got_map.get(i, 0.0) for i in ids])
        assert set(got_map) <= set(ids)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7, err_msg=f"query {query}")
        ranked_ids, ranked_scores = index.search(query, len(ids))
        assert np.all(ranked_scores > 0)
        assert np.all(np.diff(ranked_scores) <= 0), "not best first"


TERMS = st.sampled_from([f"t{i}" for i in range(12)] + ["", "ß", "向量", "\x00", "😀"])
DOC = st.lists(TERMS, max_size=12)
CORPUS = st.lists(DOC, min_size=1, max_size=25).filter(lambda docs: any(docs))
QUERY = st.lists(TERMS, min_size=1, max_size=5)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------- reference scores


@FAST
@given(
    docs=CORPUS,
    queries=st.lists(QUERY, min_size=1, max_size=4),
    k1=st.sampled_from([0.0, 0.9, 1.2, 2.0]),
    b=st.sampled_from([0.0, 0.4, 0.75, 1.0]),
    id_base=st.integers(-(2**40), 2**40),
    stride=st.integers(1, 2**20),
)
def test_scores_equal_rank_bm25_with_lucene_idf(
    docs: list[list[str]], queries: list[list[str]], k1: float, b: float, id_base: int, stride: int
) -> None:
    ids = [id_base + i * stride for i in range(len(docs))]  # large, sparse, maybe negative ids
    index = BM25Index(k1=k1, b=b)
    index.add(np.array(ids, dtype=np.int64), docs)
    assert len(index) == len(docs)
    assert_matches_reference(index, ids, docs, queries, k1, b)


@FAST
@given(
    batches=st.lists(
        st.tuples(st.sampled_from(["add", "remove"]), st.lists(st.tuples(st.integers(0, 30), DOC), max_size=10)),
        min_size=1,
        max_size=8,
    ),
    queries=st.lists(QUERY, min_size=1, max_size=3),
    search_between=st.booleans(),
)
def test_mutations_match_a_fresh_reference(
    batches: list[tuple[str, list[tuple[int, list[str]]]]], queries: list[list[str]], search_between: bool
) -> None:
    """Any sequence of upserts and removals scores exactly like a corpus of the final documents.

    Removals often exceed the 20% compaction threshold here, so both the
    dead-row and the compacted states are exercised; ``search_between``
    forces a rebuild after each batch instead of one at the end.
    """
    index = BM25Index()
    live: dict[int, list[str]] = {}
    for op, items in batches:
        if op == "add":
            index.add([i for i, _ in items], [doc for _, doc in items])
            live.update(dict(items))
        else:
            ids = [i for i, _ in items]
            assert index.remove(ids) == len({i for i in ids if i in live})
            for i in ids:
                live.pop(i, None)
        if search_between:
            index.search(["t1"], 3)
    assert sorted(live) == index.ids().tolist()
    assert all(i in index for i in live) and all(i not in index for i in range(31) if i not in live)
    ids = sorted(live)
    docs = [live[i] for i in ids]
    if not any(docs):
        for query in queries:
            assert len(index.search(query, 10)[0]) == 0
        return
    assert_matches_reference(index, ids, docs, queries, 1.2, 0.75)


def test_rankings_match_unmodified_bm25okapi_when_every_idf_is_positive() -> None:
    """Plain BM25Okapi agrees with us where its idf cannot go negative (every df < N/2).

    The two idfs are different monotone functions of df, so single-term
    rankings must be identical, and multi-term queries must match exactly
    the same documents.  (Multi-term *orders* may legitimately differ: the
    ratio between two terms' idfs is not the same under both formulas.)
    """
    rng = np.random.default_rng(7)
    vocabulary = [f"w{i}" for i in range(40)]
    docs = [list(rng.choice(vocabulary, size=int(rng.integers(3, 15)))) for _ in range(400)]
    df = {w: sum(w in d for d in docs) for w in vocabulary}
    assert max(df.values()) < len(docs) / 2
    okapi = BM25Okapi(docs, k1=1.2, b=0.75)
    index = BM25Index(k1=1.2, b=0.75)
    index.add(np.arange(len(docs)) * 3, docs)
    for word in vocabulary:
        expected = okapi.get_scores([word])
        positive = np.flatnonzero(expected > 0)
        ranking = positive[np.lexsort((positive, -expected[positive]))]
        ids, _ = index.search([word], len(docs))
        assert (ids // 3).tolist() == ranking.tolist()
    for _ in range(50):
        query = list(rng.choice(vocabulary, size=int(rng.integers(2, 5))))
        expected = set(np.flatnonzero(okapi.get_scores(query) > 0).tolist())
        ids, _ = index.search(query, len(docs))
        assert set((ids // 3).tolist()) == expected


def test_both_candidate_paths_match_the_reference() -> None:
    """A rare term (few postings: candidate path) and a common one (dense path), alone and together."""
    rng = np.random.default_rng(3)
    docs = [["common"] * int(rng.integers(1, 4)) + [f"x{rng.integers(0, 50)}"] for _ in range(500)]
    docs[17].append("rare")
    docs[401] += ["rare", "rare"]
    ids = list(range(1000, 1500))
    index = BM25Index()
    index.add(ids, docs)
    queries = [["rare"], ["rare", "x3"], ["common"], ["common", "rare"], ["x7", "x7", "x8"]]
    assert_matches_reference(index, ids, docs, queries, 1.2, 0.75)
    allowed = np.zeros(2000, dtype=bool)
    allowed[1401] = True
    assert index.search(["rare"], 5, allowed)[0].tolist() == [1401]


@pytest.mark.parametrize("with_mask", [False, True])
def test_ties_at_the_cut_go_to_the_smaller_ids(with_mask: bool) -> None:
    rng = np.random.default_rng(5)
    ids = rng.permutation(np.arange(100, 400))  # identical documents, shuffled ids
    index = BM25Index()
    index.add(ids, [["same", "words"]] * len(ids))
    index.add([5000], [["same", "same", "words"]])  # one clear winner
    allowed = np.ones(6000, dtype=bool) if with_mask else None
    got, scores = index.search(["same"], 6, allowed)
    assert got.tolist() == [5000, 100, 101, 102, 103, 104]
    assert scores[0] > scores[1] and len(set(scores[1:].tolist())) == 1


# ------------------------------------------------------------ upsert / remove


def test_upsert_remove_then_search() -> None:
    texts = {
        10: "vector search with faiss",
        20: "keyword search with bm25 ranking",
        30: "hybrid search fuses vector and keyword ranking",
        40: "permissions decide what a user may read",
        50: "the lexical index stores postings",
    }
    index = BM25Index()
    index.add(list(texts), [tokenize(t) for t in texts.values()])
    assert index.remove([20, 40, 999]) == 2
    assert index.remove([20]) == 0
    index.add([30], [tokenize("tokenizer bigrams for chinese text")])  # upsert
    index.add([60], [tokenize("keyword ranking tuned for chinese")])
    final = {10: texts[10], 30: "tokenizer bigrams for chinese text", 50: texts[50], 60: "keyword ranking tuned for chinese"}

    assert len(index) == 4 and index.ids().tolist() == [10, 30, 50, 60]
    assert 20 not in index and 40 not in index and 30 in index
    hits, _ = index.search(tokenize("keyword search ranking permissions"), 10)
    assert 20 not in hits and 40 not in hits
    assert hits.tolist()[0] == 60
    hits, _ = index.search(tokenize("hybrid fuses vector"), 10)
    assert 30 not in hits.tolist(), "the replaced text must not match any more"
    assert index.search(tokenize("chinese bigrams"), 1)[0].tolist() == [30]

    fresh = BM25Index()
    fresh.add(list(final), [tokenize(t) for t in final.values()])
    assert index.avgdl == pytest.approx(fresh.avgdl)
    for query in ["keyword ranking", "vector search", "chinese text", "postings index", "search"]:
        got, want = scores_by_id(index, tokenize(query)), scores_by_id(fresh, tokenize(query))
        assert got.keys() == want.keys()
        for chunk_id, score in want.items():
            assert got[chunk_id] == pytest.approx(score, rel=1e-5)


def test_many_small_adds_hold_memory_in_proportion_to_their_tokens() -> None:
    """An index pass adds version by version: pending adds must not carry a vocabulary-sized array each."""
    index = BM25Index()
    index.add(np.arange(50_000), [[f"w{i}"] for i in range(50_000)])  # a 50k-term vocabulary
    index.search(["w1"], 1)  # consolidated
    before = index.memory_bytes()
    for n in range(300):
        index.add([100_000 + n], [["w1", "w2", f"new{n}"]])
    assert index.memory_bytes() - before < 300 * 200  # ~3 tokens each, not 300 x 50k pointers
    assert index.search(["new7"], 5)[0].tolist() == [100_007]
    assert len(index) == 50_300


def test_duplicate_ids_in_one_batch_keep_the_last_document() -> None:
    index = BM25Index()
    index.add([5, 6, 5], [["old"], ["other"], ["new"]])
    assert len(index) == 2
    assert index.search(["old"], 5)[0].tolist() == []
    assert index.search(["new"], 5)[0].tolist() == [5]


def test_argument_errors_and_empty_cases() -> None:
    index = BM25Index()
    assert index.search(["x"], 5)[0].dtype == np.int64
    assert len(index.search(["x"], 5)[0]) == 0
    with pytest.raises(ValueError):
        index.add([1, 2], [["a"]])
    with pytest.raises(TypeError):
        index.add([1.5], [["a"]])
    with pytest.raises(TypeError):
        index.add([1], [[3]])  # tokens must be strings
    with pytest.raises(ValueError):
        BM25Index(b=1.5)
    index.add([], [])
    index.add(np.array([3], dtype=np.uint32), [["a", "b"]])
    assert index.remove([]) == 0
    assert len(index.search(["a"], 0)[0]) == 0
    assert len(index.search(["unknown"], 5)[0]) == 0
    assert len(index.search([], 5)[0]) == 0
    assert "3" not in index and 3.0 not in index and 3 in index and np.int64(3) in index
    ids, scores = index.search(["a"], 5)
    assert ids.tolist() == [3] and scores.dtype == np.float32
    index.add([4], [[]])  # an empty document counts in N and avgdl, never matches
    assert len(index) == 2 and index.avgdl == 1.0
    assert index.search(["a"], 5)[0].tolist() == [3]


def test_all_documents_removed() -> None:
    index = BM25Index()
    index.add([1, 2, 3], [["a"], ["a", "b"], ["c"]])
    assert index.remove([1, 2, 3]) == 3
    assert len(index) == 0 and len(index.search(["a"], 5)[0]) == 0
    index.add([2], [["b"]])
    assert index.search(["b", "a"], 5)[0].tolist() == [2]


# ------------------------------------------------------------------ allowed


@FAST
@given(
    docs=CORPUS,
    query=QUERY,
    k=st.integers(1, 30),
    mask_bits=st.lists(st.booleans(), max_size=70),
    removed=st.lists(st.integers(0, 24), max_size=6),
)
def test_allowed_mask_equals_filtered_full_ranking(
    docs: list[list[str]], query: list[str], k: int, mask_bits: list[bool], removed: list[int]
) -> None:
    """Masked top-k == the first k allowed hits of the unmasked full ranking.

    Ids are spread over 0..72 so some fall outside a short mask (refused),
    and removed ids must stay out whatever the mask says.
    """
    ids = [i * 3 for i in range(len(docs))]
    index = BM25Index()
    index.add(ids, docs)
    index.remove([r * 3 for r in removed])
    allowed = np.array(mask_bits, dtype=bool)
    full_ids, full_scores = index.search(query, max(len(index), 1))
    keep = np.array([i < len(allowed) and allowed[i] for i in full_ids.tolist()], dtype=bool)
    got_ids, got_scores = index.search(query, k, allowed)
    assert got_ids.tolist() == full_ids[keep][:k].tolist()
    assert got_scores.tolist() == full_scores[keep][:k].tolist()


def test_allowed_mask_refuses_negative_and_out_of_range_ids() -> None:
    index = BM25Index()
    index.add([-1, 0, 5, 10**12], [["a"], ["a"], ["a"], ["a"]])
    allowed = np.ones(6, dtype=bool)
    assert sorted(index.search(["a"], 10, allowed)[0].tolist()) == [0, 5]
    assert len(index.search(["a"], 10, np.zeros(0, dtype=bool))[0]) == 0
    assert index.search(["a"], 10, np.array([0, 0, 0, 0, 0, 1], dtype=np.uint8))[0].tolist() == [5]


def test_forbidden_documents_never_displace_allowed_ones() -> None:
    # 200 forbidden documents outscore the single allowed one; k=1 must still find it.
    docs = [["secret"] * 5] * 200 + [["secret", "filler", "filler", "filler"]]
    index = BM25Index()
    index.add(range(201), docs)
    allowed = np.zeros(201, dtype=bool)
    allowed[200] = True
    assert index.search(["secret"], 1, allowed)[0].tolist() == [200]


# ----------------------------------------------------------------- persistence


def _sample_index() -> tuple[BM25Index, list[list[str]]]:
    rng = np.random.default_rng(11)
    words = [f"w{i}" for i in range(60)] + ["向量", "ß", "", "a\x00b", "\ud800", "😀"]
    docs = [list(rng.choice(words, size=int(rng.integers(0, 20)))) for _ in range(300)]
    index = BM25Index(k1=0.9, b=0.4)
    index.add(rng.permutation(10**6)[:300] * 1000 + 7, docs)
    queries = [list(rng.choice(words, size=int(rng.integers(1, 4)))) for _ in range(30)]
    return index, queries


def test_save_load_round_trip(tmp_path: Path) -> None:
    index, queries = _sample_index()
    index.remove(index.ids()[::7])  # dead rows: save compacts them away
    index.add([1, 2], [["w1", "w1", "向量"], ["😀"]])
    before = [index.search(q, 20) for q in queries]
    path = tmp_path / "lexical.tmp"  # no .npz suffix: must be written to exactly this name
    index.save(path)
    assert path.exists() and not (tmp_path / "lexical.tmp.npz").exists()
    loaded = BM25Index.load(path)
    assert (loaded.k1, loaded.b) == (0.9, 0.4)
    assert loaded.ids().tolist() == index.ids().tolist()
    for q, (ids, scores) in zip(queries, before, strict=True):
        got_ids, got_scores = loaded.search(q, 20)
        assert got_ids.tolist() == ids.tolist()
        assert got_scores.tolist() == scores.tolist()
        assert index.search(q, 20)[0].tolist() == ids.tolist()  # saving did not change the original
    loaded.add([3], [["w2"]])  # a loaded index stays mutable
    assert 3 in loaded and loaded.remove([1]) == 1


def test_load_uses_allow_pickle_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index, _ = _sample_index()
    index.save(tmp_path / "x.npz")
    seen: list[object] = []
    real_load = np.load

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    BM25Index.load(tmp_path / "x.npz")
    assert seen == [False]


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty", "object_array", "inconsistent", "zero_tf", "no_format"])
def test_corrupt_files_raise_value_error(tmp_path: Path, damage: str) -> None:
    index, _ = _sample_index()
    path = tmp_path / "lexical.npz"
    index.save(path)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        # Inside the largest member's data, so the zip directory still parses
        # and only the CRC (or our own checks) can notice.
        with zipfile.ZipFile(path) as archive:
            info = max(archive.infolist(), key=lambda i: i.file_size)
        middle = info.header_offset + 100 + info.file_size // 2
        path.write_bytes(raw[:middle] + bytes([raw[middle] ^ 0xFF]) + raw[middle + 1 :])
    elif damage == "garbage":
        path.write_bytes(b"not an index at all" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        if damage == "object_array":
            arrays["rows"] = np.array([object()] * 3, dtype=object)
        elif damage == "inconsistent":
            arrays["rows"] = arrays["rows"].copy()
            arrays["rows"][5] = len(arrays["row_ids"]) + 10
        elif damage == "zero_tf":
            arrays["tf"] = np.zeros_like(arrays["tf"])
        else:
            del arrays["format"]
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
    with pytest.raises(ValueError):
        BM25Index.load(path)


def test_inconsistent_lengths_are_rejected(tmp_path: Path) -> None:
    index, _ = _sample_index()
    path = tmp_path / "lexical.npz"
    index.save(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["doc_len"] = arrays["doc_len"] + 1  # lengths must agree with the postings
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(ValueError, match="lengths"):
        BM25Index.load(path)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        BM25Index.load(tmp_path / "absent.npz")


def test_concurrent_searches_on_a_freshly_mutated_index() -> None:
    index, queries = _sample_index()
    expected = [index.search(q, 10)[0].tolist() for q in queries]
    index.add([42], [["w3", "w3"]])
    index.remove([42])  # dirty again: the first searches race to rebuild
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda q: index.search(q, 10)[0].tolist(), queries * 4))
    assert results == expected * 4


# ------------------------------------------------------------------ tokenizer


def test_chinese_becomes_character_bigrams() -> None:
    assert tokenize("向量数据库") == ["向量", "量数", "数据", "据库"]
    assert tokenize("库") == ["库"]
    assert tokenize("向量，数据库。") == ["向量", "数据", "据库"]  # punctuation ends a run


def test_mixed_scripts() -> None:
    assert tokenize("Cairn 使用向量检索 v2.0", stem=False) == ["cairn", "使用", "用向", "向量", "量检", "检索", "v2", "0"]
    assert tokenize("GPU加速") == ["gpu", "加速"]
    assert tokenize("カタカナとひらがな") == ["カタ", "タカ", "カナ", "ナと", "とひ", "ひら", "らが", "がな"]
    assert tokenize("한국어 검색") == ["한국", "국어", "검색"]
    assert tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # vowel signs stay inside the word
    assert tokenize("Привет, мир! Ελληνικά") == ["привет", "мир", "ελληνικά"]


def test_casefold_and_nfkc() -> None:
    assert tokenize("STRASSE", stem=False) == tokenize("Straße", stem=False) == ["strasse"]
    assert tokenize("ＡＢＣ１２３ ﬁle", stem=False) == ["abc123", "file"]  # full-width, ligature
    assert tokenize("ｶﾀｶﾅ") == tokenize("カタカナ")  # half-width katakana
    assert tokenize("covid-19 user_id", stem=False) == ["covid", "19", "user", "id"]


def test_stopwords_dropped() -> None:
    assert tokenize("The cat and the hat is in a box", stem=False) == ["cat", "hat", "box"]
    assert tokenize("the of and to in is") == []
    assert tokenize("user's book isn't", stem=False) == ["user", "book", "isn"]
    assert {"the", "a", "of", "and", "to", "in", "is"} <= STOPWORDS and len(STOPWORDS) < 50


def test_stemming() -> None:
    assert tokenize("running runs ran", stem=True) == ["run", "run", "ran"]
    assert tokenize("Generalizations of oscillators", stem=True) == ["gener", "oscil"]
    assert tokenize("naïve cafés", stem=True) == ["naïve", "cafés"]  # English stemmer leaves non-ASCII alone
    assert tokenize("running", stem=False) == ["running"]


def test_degenerate_text() -> None:
    assert tokenize("") == []
    assert tokenize("  ...!?  — ") == []
    assert tokenize("x" * 129) == []  # longer than MAX_TOKEN_CHARS: a blob
    assert tokenize("  ok\n\t") == ["ok"]
