"""The dense leg, the allowed-set mask, fusion and the versioned index files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kb.retrieval.dense import DenseIndex
from kb.retrieval.fusion import reciprocal_rank_fusion
from kb.retrieval.hybrid import allowed_mask, hybrid_search
from kb.retrieval.index_store import IndexReader, IndexStore
from kb.retrieval.lexical import BM25Index, tokenize


def unit(rows: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@given(st.lists(st.tuples(st.integers(1, 500), st.integers(0, 40)), max_size=20))
@settings(max_examples=200, deadline=None)
def test_allowed_mask_marks_exactly_the_ids_in_the_ranges(ranges):
    mask = allowed_mask(ranges)
    expected = {i for start, count in ranges for i in range(start, start + count)}
    assert set(np.flatnonzero(mask).tolist()) == expected


def test_dense_search_with_mask_never_returns_a_forbidden_id_and_matches_exact_search():
    vectors = unit(300)
    ids = np.arange(1000, 1300, dtype=np.int64)
    index = DenseIndex(8)
    index.add(ids, vectors)
    allowed = np.zeros(1300, dtype=bool)
    allowed[ids[::7]] = True
    query = vectors[5]

    got, scores = index.search(query, 10, allowed)

    assert set(got.tolist()) <= set(np.flatnonzero(allowed).tolist())
    brute = sorted(((float(vectors[i] @ query), int(ids[i])) for i in range(300) if allowed[ids[i]]), reverse=True)
    assert got.tolist() == [doc for _, doc in brute[:10]]
    assert np.allclose(scores, [score for score, _ in brute[:10]], atol=1e-5)


def test_dense_upsert_replaces_instead_of_duplicating():
    index = DenseIndex(8)
    vectors = unit(3)
    index.add(np.array([1, 2, 3]), vectors)
    index.add(np.array([2]), vectors[:1])
    assert len(index) == 3
    ids, _ = index.search(vectors[0], 3)
    assert set(ids[:2].tolist()) == {1, 2}
    assert index.remove(np.array([2, 99])) == 1
    assert sorted(index.ids().tolist()) == [1, 3]


def test_empty_mask_returns_nothing():
    index = DenseIndex(8)
    index.add(np.array([1, 2]), unit(2))
    ids, _ = index.search(unit(1)[0], 5, np.zeros(3, dtype=bool))
    assert len(ids) == 0


def test_rrf_rewards_agreement_and_is_deterministic():
    fused = reciprocal_rank_fusion([np.array([1, 2, 3]), np.array([3, 2, 4])], k=60)
    order = [doc for doc, _, _ in fused]
    assert order[:2] == [2, 3] or order[:2] == [3, 2]
    assert dict((d, r) for d, _, r in fused)[4] == (None, 3)
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 62) or fused[0][1] == pytest.approx(1 / 63 + 1 / 61)
    assert reciprocal_rank_fusion([np.array([5, 6])], k=60) == reciprocal_rank_fusion([np.array([5, 6])], k=60)


def _snapshot_with(store: IndexStore, ids: list[int], texts: list[str]):
    snapshot = store.load() or store.empty(8)
    snapshot.dense.add(np.array(ids, dtype=np.int64), unit(len(ids), seed=ids[0]))
    snapshot.lexical.add(np.array(ids, dtype=np.int64), [tokenize(t) for t in texts])
    return snapshot


def test_index_versions_are_atomic_and_readers_pick_up_new_versions(tmp_path):
    store = IndexStore(tmp_path, "model-a")
    reader = IndexReader(store)
    assert reader.snapshot() is None

    with store.writer_lock():
        first = store.write(_snapshot_with(store, [1, 2], ["red apples", "green pears"]))
    held = reader.snapshot()
    assert held is not None and held.version == first and held.size == 2

    with store.writer_lock():
        second = store.write(_snapshot_with(store, [3], ["blue plums"]))
    assert second == first + 1
    fresh = reader.snapshot()
    assert fresh is not None and fresh.version == second and fresh.size == 3
    assert held.size == 2  # a query holding the old snapshot is undisturbed
    assert not list(tmp_path.glob("model-a/.tmp-*"))


def test_searches_during_a_reload_are_answered_from_the_held_version(tmp_path):
    """One search loads a new version; the others meanwhile get the held one instead of queueing."""
    import threading

    store = IndexStore(tmp_path, "model-a")
    reader = IndexReader(store)
    with store.writer_lock():
        first = store.write(_snapshot_with(store, [1, 2], ["red apples", "green pears"]))
    assert reader.snapshot().version == first
    with store.writer_lock():
        second = store.write(_snapshot_with(store, [3], ["blue plums"]))

    started, release = threading.Event(), threading.Event()
    real_load = store.load

    def slow_load(*args, **kwargs):
        started.set()
        assert release.wait(10)
        return real_load(*args, **kwargs)

    store.load = slow_load
    loaded = []
    loader = threading.Thread(target=lambda: loaded.append(reader.snapshot()))
    loader.start()
    assert started.wait(10)
    assert reader.snapshot().version == first  # not blocked behind the load
    release.set()
    loader.join(10)
    assert loaded[0].version == second and reader.snapshot().version == second


def test_old_versions_are_pruned_but_the_current_one_stays(tmp_path):
    store = IndexStore(tmp_path, "m")
    for i in range(6):
        with store.writer_lock():
            store.write(_snapshot_with(store, [i + 1], [f"doc {i}"]))
    versions = sorted(p.name for p in (tmp_path / "m").glob("v*"))
    assert versions[-1] == "v00000006" and len(versions) <= 3
    assert IndexStore(tmp_path, "m").load().size == 6


def test_an_index_built_for_another_model_is_refused(tmp_path):
    store = IndexStore(tmp_path, "model-a")
    with store.writer_lock():
        store.write(_snapshot_with(store, [1], ["x"]))
    (tmp_path / "model-a").rename(tmp_path / "model-b")
    with pytest.raises(ValueError, match="built for model"):
        IndexStore(tmp_path, "model-b").load()


def test_hybrid_search_fuses_both_legs_inside_the_allowed_set(tmp_path):
    store = IndexStore(tmp_path, "m")
    snapshot = _snapshot_with(store, [1, 2, 3, 4], ["alpha beta", "beta gamma", "gamma delta", "alpha alpha"])
    allowed = allowed_mask([(1, 3)])  # 4 is forbidden
    hits = hybrid_search(snapshot, query_vector=unit(4, seed=1)[3], query_tokens=tokenize("alpha"),
                         allowed=allowed, k=10)
    assert {h.chunk_id for h in hits} <= {1, 2, 3}
    assert hits[0].chunk_id == 1 and hits[0].lexical_rank == 1
    lexical_only = hybrid_search(snapshot, query_vector=None, query_tokens=tokenize("alpha"),
                                 allowed=allowed, k=10, mode="lexical")
    assert [h.chunk_id for h in lexical_only] == [1]


def test_bm25_and_dense_legs_survive_a_save_load_round_trip(tmp_path):
    store = IndexStore(tmp_path, "m")
    with store.writer_lock():
        store.write(_snapshot_with(store, [10, 11], ["solar panels on roofs", "wind turbines offshore"]))
    loaded = store.load()
    ids, _ = loaded.lexical.search(tokenize("wind"), 5)
    assert ids.tolist() == [11]
    assert isinstance(loaded.lexical, BM25Index) and len(loaded.dense) == 2
