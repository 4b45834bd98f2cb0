""""No good match": the evidence check (kb/retrieval/evidence.py) and what search and ask say when it fires."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kb.answering import NO_GOOD_MATCH_ANSWER
from kb.retrieval.evidence import is_weak
from kb.retrieval.lexical import BM25Index
from kb.retrieval.tokenize import tokenize
from tests.kb.conftest import upload


def bm25(texts: list[str]) -> BM25Index:
    index = BM25Index()
    index.add(np.arange(1, len(texts) + 1), [tokenize(t) for t in texts])
    return index


def test_term_coverage_is_the_idf_weighted_share_of_query_terms_a_chunk_holds():
    index = bm25(["turbine hall maintenance", "turbine blades", "visitors badge", "front desk badge"])
    n = 4
    idf = {term: float(np.log1p((n - df + 0.5) / (df + 0.5))) for term, df in
           {"turbine": 2, "maintenance": 1, "zebra": 0}.items()}
    coverage = index.term_coverage(tokenize("turbine maintenance zebra"), [1, 2, 3, 99])
    total = sum(idf.values())
    assert coverage.tolist() == pytest.approx([(idf["turbine"] + idf["maintenance"]) / total,
                                               idf["turbine"] / total, 0.0, 0.0])
    assert index.term_coverage([], [1]).tolist() == [0.0]


def test_no_good_match_needs_both_legs_weak():
    assert is_weak(0.1, 0.2, dense_threshold=0.3, lexical_threshold=0.5)
    assert not is_weak(0.6, 0.2, dense_threshold=0.3, lexical_threshold=0.5)   # the embedder vouches
    assert not is_weak(0.1, 0.9, dense_threshold=0.3, lexical_threshold=0.5)   # the words are all there
    assert is_weak(None, None, dense_threshold=0.3, lexical_threshold=0.5)      # nothing ran
    assert not is_weak(None, 0.9, dense_threshold=0.3, lexical_threshold=0.5)   # lexical mode, full coverage


HANDBOOK = [
    ("leave.md", b"# Annual leave\n\nEmployees get twenty-five days of paid holiday a year. Unused days carry over "
                 b"until the end of March.\n"),
    ("turbine.md", b"# Turbine hall\n\nThe quarterly maintenance window for the turbine hall starts at 06:00 on "
                   b"the first Sunday of the quarter.\n"),
    ("visitors.md", b"# Visitors\n\nVisitors must sign in at the front desk and wear a badge at all times.\n"),
]


@pytest.fixture
def handbook(api, collection_id) -> int:
    for name, data in HANDBOOK:
        assert upload(api, collection_id, name, data).status_code == 201
    return collection_id


@pytest.mark.django_db(transaction=True)
def test_search_says_no_good_match_for_nonsense_but_not_for_a_real_question(api, handbook):
    nonsense = api.get("/api/v1/search", {"q": "xylophone quantum zebra", "collection": handbook}).json()
    real = api.get("/api/v1/search", {"q": "how many days of holiday do employees get",
                                      "collection": handbook}).json()

    assert nonsense["no_good_match"] is True and nonsense["results"]  # still the least bad passages, flagged
    assert set(nonsense["evidence"]) == {"dense_best", "lexical_coverage", "no_good_match"}
    assert real["no_good_match"] is False and real["results"][0]["title"] == "leave.md"
    assert real["evidence"]["dense_best"] > nonsense["evidence"]["dense_best"]


@pytest.mark.django_db(transaction=True)
def test_ask_answers_no_good_match_instead_of_citing_unrelated_passages(api, handbook):
    body = api.post("/api/v1/ask", {"question": "xylophone quantum zebra", "collection": handbook},
                    format="json").json()

    assert body["answer"] == NO_GOOD_MATCH_ANSWER and body["no_good_match"] is True
    assert body["citations"] == [] and body["passages"] == []

    real = api.post("/api/v1/ask", {"question": "When does the turbine hall maintenance window start?",
                                    "collection": handbook}, format="json").json()
    assert real["no_good_match"] is False and "06:00" in real["answer"] and real["citations"]


@pytest.mark.django_db(transaction=True)
def test_a_streamed_ask_with_no_good_match_streams_the_same_answer(api, handbook):
    response = api.post("/api/v1/ask", {"question": "xylophone quantum zebra", "collection": handbook,
                                        "stream": True}, format="json")

    frames = b"".join(response.streaming_content).decode().strip().split("\n\n")
    events = {f.split("\n")[0][7:]: json.loads(f.split("\n")[1][6:]) for f in frames}
    assert list(events) == ["start", "token", "citations", "done"]
    assert events["done"]["answer"] == NO_GOOD_MATCH_ANSWER and events["done"]["no_good_match"] is True
    assert events["citations"]["citations"] == []


@pytest.mark.django_db(transaction=True)
def test_thresholds_come_from_the_settings(api, handbook, settings):
    settings.CAIRN_NO_MATCH_DENSE = -1.0  # the dense leg vouches for anything
    body = api.get("/api/v1/search", {"q": "xylophone quantum zebra", "collection": handbook}).json()
    assert body["no_good_match"] is False


def test_term_coverage_matches_a_brute_force_count_after_adds_in_batches_and_removals():
    rng = np.random.default_rng(15)
    words = [f"w{i}" for i in range(40)]
    texts = {i: " ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for i in range(1, 301)}
    index = BM25Index()
    for start in range(1, 301, 50):  # several pending blocks, consolidated into one matrix
        ids = list(range(start, start + 50))
        index.add(np.array(ids), [tokenize(texts[i]) for i in ids])
    index.remove(np.arange(1, 130, 2))  # 65 of 300: past the compaction threshold (20 %)
    live = {i: set(tokenize(t)) for i, t in texts.items() if not (i < 130 and i % 2 == 1)}
    n = len(live)
    for query in ("w1 w2 w3", "w0 w39 nothing", "w7"):
        terms = list(dict.fromkeys(tokenize(query)))
        df = {t: sum(t in toks for toks in live.values()) for t in terms}
        idf = {t: float(np.log1p((n - df[t] + 0.5) / (df[t] + 0.5))) for t in terms}
        chunk_ids = [2, 4, 150, 299, 1]  # 1 was removed
        expected = [sum(idf[t] for t in terms if i in live and t in live[i]) / sum(idf.values()) for i in chunk_ids]
        assert index.term_coverage(tokenize(query), chunk_ids).tolist() == pytest.approx(expected)
