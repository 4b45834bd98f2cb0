"""The leg check (kb/retrieval/legcheck.py): a leg that cannot find the passages its own text came from
is left out of the default fusion."""

from __future__ import annotations

import json
import random

import pytest

from kb.retrieval.fusion import FusionConfig
from kb.retrieval.legcheck import LegCheck, checked_fusion, pseudo_queries, pseudo_query
from tests.kb.conftest import upload


def test_a_pseudo_query_is_a_span_of_words_or_of_unspaced_characters():
    rng = random.Random(0)
    words = " ".join(f"w{i}" for i in range(30))
    span = pseudo_query(words, rng).split()
    assert len(span) == 8 and " ".join(span) in words
    chinese = "汽轮机大厅的季度维护窗口从每季度第一个星期日早上六点开始，持续八个小时。"
    assert len(pseudo_query(chinese, rng)) == 16 and pseudo_query(chinese, rng) in chinese
    assert pseudo_query("short text", rng) == "short text"
    assert pseudo_queries([words, chinese]) == pseudo_queries([words, chinese])  # seeded


def test_the_default_leaves_out_a_leg_that_fails_and_is_otherwise_unchanged():
    default = FusionConfig()
    assert checked_fusion(default, None) == default
    assert checked_fusion(default, LegCheck(dense=0.68, lexical=1.0, queries=100)) == default
    assert checked_fusion(default, LegCheck(dense=0.47, lexical=0.85, queries=60)) == default  # templated text
    bm25_alone = checked_fusion(default, LegCheck(dense=0.2, lexical=0.98, queries=100))
    assert bm25_alone.weight == 0.0 and bm25_alone.checked and bm25_alone.describe().endswith("(leg check)")
    dense_alone = checked_fusion(default, LegCheck(dense=0.9, lexical=0.2, queries=100))
    assert dense_alone.weight == 1.0 and dense_alone.checked
    # A setting that already uses one leg alone is left as it is.
    assert checked_fusion(FusionConfig(weight=0.0), LegCheck(dense=0.9, lexical=0.1, queries=100)).weight == 0.0


TOPICS = ["turbine", "boiler", "cooling tower", "substation", "warehouse", "canteen"]


def rules(api, collection_id) -> None:
    for i in range(60):
        text = (f"# Rule {i}\n\nRule {i}: the {TOPICS[i % 6]} equipment is inspected every {i % 4 + 1} weeks "
                f"and signed off by shift {i % 7 + 1}; spare keys for the {TOPICS[(i + 2) % 6]} hang in the "
                f"{TOPICS[(i + 3) % 6]} office, record {1000 + i * 7}.\n")
        assert upload(api, collection_id, f"rule-{i}.md", text.encode()).status_code == 201


@pytest.mark.django_db(transaction=True)
def test_documents_both_legs_read_keep_the_default_and_the_check_is_kept_beside_the_index(api, collection_id):
    from kb import index

    index._legs_memo.clear()
    rules(api, collection_id)
    state = api.get(f"/api/v1/collections/{collection_id}/tune").json()
    assert state["in_use"] == "convex minmax w=0.5", state
    check = json.loads((index.index_store().dir / index.LEG_CHECK_FILE).read_text())
    assert check["size"] == 60 and check["check"]["queries"] == 60
    assert check["check"]["lexical"] >= 0.8 and check["check"]["dense"] >= check["check"]["lexical"] / 3, check


@pytest.mark.django_db(transaction=True)
def test_a_leg_that_fails_the_check_is_left_out_of_search_tuning_and_evaluation_records(
    api, collection_id, monkeypatch
):
    """The measurement on real data is benchmarks/retrieval_quality.py on CMRC 2018 (docs/retrieval.md):
    the bundled English embedder finds 20 % of Chinese spans' passages against BM25's 98 %."""
    from kb import index
    from kb.retrieval.legcheck import LegCheck

    index._legs_memo.clear()
    monkeypatch.setattr(index, "_compute_leg_check", lambda snapshot: LegCheck(dense=0.2, lexical=0.98, queries=60))
    rules(api, collection_id)
    state = api.get(f"/api/v1/collections/{collection_id}/tune").json()
    assert state["in_use"] == "convex minmax w=0 (leg check)" and state["default"] == state["in_use"], state
    for q in ("boiler keys office", "shift 3 inspected every 2 weeks"):
        hybrid = api.get("/api/v1/search", {"q": q, "collection": collection_id, "mode": "hybrid"}).json()
        lexical = api.get("/api/v1/search", {"q": q, "collection": collection_id, "mode": "lexical"}).json()
        assert [r["chunk_id"] for r in hybrid["results"]] == [r["chunk_id"] for r in lexical["results"]]
