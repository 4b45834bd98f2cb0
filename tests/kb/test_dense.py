"""The dense leg at scale: approximate above a threshold, filtered recall, delta + tombstones, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from kb.retrieval.dense import DenseConfig, DenseIndex
from kb.retrieval.index_store import IndexReader, IndexSnapshot, IndexStore
from kb.retrieval.lexical import BM25Index

DIM = 16
# Tiny thresholds so a few thousand vectors exercise the approximate path; every test
# runs with exact float32 refinement and with the default float16 one.
SPECS = ["PQ8x4fs,RFlat", "PQ8x4fs,Refine(SQfp16)"]


@pytest.fixture(params=SPECS)
def approx(request) -> DenseConfig:
    return DenseConfig(approx_above=500, approx_spec=request.param, rerank_depth=400, exact_max=200,
                       delta_max=300)


def unit(rows: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force(ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int,
                allowed: np.ndarray | None = None) -> list[int]:
    keep = np.ones(len(ids), bool) if allowed is None else allowed[ids]
    scores = vectors[keep] @ query
    return ids[keep][np.argsort(-scores, kind="stable")[:k]].tolist()


def recall(index: DenseIndex, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int,
           allowed: np.ndarray | None = None) -> float:
    hits = 0
    for query in queries:
        got, _ = index.search(query, k, allowed)
        if allowed is not None:
            assert allowed[got].all(), "a forbidden id was ranked"
        hits += len(set(got.tolist()) & set(brute_force(ids, vectors, query, k, allowed)))
    return hits / (k * len(queries))


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray]:
    return np.arange(1, 3001, dtype=np.int64), unit(3000)


def test_small_index_stays_exact_and_large_one_becomes_approximate(corpus, approx):
    ids, vectors = corpus
    small = DenseIndex.build(DIM, ids[:400], vectors[:400], config=approx)
    large = DenseIndex.build(DIM, ids, vectors, config=approx)

    assert small.kind == "flat"
    assert large.kind == "approximate"
    assert recall(small, ids[:400], vectors[:400], unit(20, seed=1), 10) == 1.0
    assert recall(large, ids, vectors, unit(20, seed=1), 10) >= 0.95


@pytest.mark.parametrize("n", [400, 3000])  # flat and approximate
def test_a_build_from_batches_is_the_same_index_as_a_build_from_one_array(corpus, approx, n):
    """What a model switch does: pieces read one at a time (twice when training) == ``build``."""
    ids, vectors = corpus[0][:n], corpus[1][:n]
    reads = []

    def batches():
        reads.append(1)
        for at in range(0, n, 170):
            yield ids[at:at + 170], vectors[at:at + 170]

    streamed = DenseIndex.build_batches(DIM, batches, n, config=approx)
    whole = DenseIndex.build(DIM, ids, vectors, config=approx)
    assert streamed.kind == whole.kind == ("approximate" if n >= 500 else "flat")
    assert len(reads) == (2 if n >= 500 else 1)
    for query in unit(10, seed=3):
        got, scores = streamed.search(query, 10)
        want, want_scores = whole.search(query, 10)
        assert got.tolist() == want.tolist() and np.allclose(scores, want_scores)
    with pytest.raises(ValueError, match="not"):
        DenseIndex.build_batches(DIM, batches, n + 1, config=approx)
    with pytest.raises(ValueError, match="repeat"):
        DenseIndex.build_batches(DIM, lambda: [(ids[:5], vectors[:5]), (ids[:5], vectors[:5])], 10, config=approx)


def test_adds_past_the_threshold_switch_to_approximate_on_merge(corpus, approx):
    ids, vectors = corpus
    index = DenseIndex(DIM, config=DenseConfig(**{**approx.__dict__, "delta_max": 10_000}))
    index.add(ids[:400], vectors[:400])
    assert not index.needs_merge()
    index.add(ids[400:700], vectors[400:700])

    assert index.needs_merge()
    index.merge()
    assert index.kind == "approximate" and len(index) == 700
    assert recall(index, ids[:700], vectors[:700], unit(10, seed=2), 10) >= 0.95


@pytest.mark.parametrize("share", [0.10, 0.01])
def test_filtered_search_returns_only_allowed_ids_with_exact_quality(corpus, share, approx):
    ids, vectors = corpus
    index = DenseIndex.build(DIM, ids, vectors, config=approx)
    allowed = np.zeros(len(ids) + 1, bool)
    allowed[ids[np.random.default_rng(3).random(len(ids)) < share]] = True

    assert recall(index, ids, vectors, unit(20, seed=4), 10, allowed) >= 0.95


def test_small_allowed_set_is_searched_exactly(corpus, approx):
    """At most ``exact_max`` allowed ids: the allowed vectors are scored exactly (== brute force)."""
    ids, vectors = corpus
    index = DenseIndex.build(DIM, ids, vectors, config=approx)
    allowed = np.zeros(len(ids) + 1, bool)
    allowed[ids[::25]] = True  # 120 ids <= exact_max
    for query in unit(10, seed=5):
        got, scores = index.search(query, 10, allowed)
        assert got.tolist() == brute_force(ids, vectors, query, 10, allowed)
        # float16 refinement stores each component to ~3 significant digits
        atol = 1e-5 if approx.approx_spec.endswith("RFlat") else 2e-3
        assert np.allclose(scores, np.sort(vectors[got - 1] @ query)[::-1], atol=atol)


def test_tombstones_hide_removed_ids_and_merge_drops_them(corpus, approx):
    ids, vectors = corpus
    index = DenseIndex.build(DIM, ids, vectors, config=approx)
    query = vectors[41]
    assert index.search(query, 1)[0].tolist() == [42]

    assert index.remove(np.array([42, 10**9])) == 1
    assert 42 not in index.search(query, 10)[0].tolist()
    allowed = np.zeros(len(ids) + 1, bool)
    allowed[[42, 43, 44]] = True
    assert index.search(query, 10, allowed)[0].tolist() == brute_force(ids, vectors, query, 2, allowed)[:2] or \
        42 not in index.search(query, 10, allowed)[0].tolist()
    assert len(index) == len(ids) - 1

    index.merge()  # rebuilds the approximate base without the tombstoned row (quantiser kept)
    assert index.kind == "approximate"
    assert len(index.deleted) == 0 and len(index) == len(ids) - 1
    assert 42 not in index.ids().tolist()
    live = ids != 42
    assert recall(index, ids[live], vectors[live], unit(10, seed=9), 10) >= 0.95


def test_upsert_of_a_base_id_replaces_its_vector(corpus, approx):
    ids, vectors = corpus
    index = DenseIndex.build(DIM, ids, vectors, config=approx)
    index.add(np.array([7]), vectors[99:100])  # id 7 now holds the vector of id 100

    got, _ = index.search(vectors[99], 2)
    assert set(got.tolist()) == {7, 100}
    assert len(index) == len(ids)


def test_persistence_round_trip_and_add_after_load(tmp_path, corpus, approx):
    ids, vectors = corpus
    store = IndexStore(tmp_path, "m", dense_config=approx)
    with store.writer_lock():
        store.write(IndexSnapshot(0, "m", DenseIndex.build(DIM, ids, vectors, config=approx), BM25Index()))
    reader = IndexReader(IndexStore(tmp_path, "m", dense_config=approx))
    first = reader.snapshot()
    assert first is not None and first.dense.kind == "approximate" and first.size == len(ids)
    queries = unit(10, seed=6)
    before = [first.dense.search(q, 10)[0].tolist() for q in queries]

    # The writer appends without reading the base; the reader picks the new version up
    # and shares the unchanged base object instead of loading it again.
    new = unit(5, seed=7)
    with store.writer_lock():
        writer = store.load(lazy_dense=True)
        assert writer is not None and writer.dense._base is None
        writer.dense.add(np.arange(5001, 5006), new)
        writer.dense.remove(np.array([1]))
        store.write(writer)
    second = reader.snapshot()

    assert second is not first and second.size == len(ids) + 5 - 1
    assert second.dense._base is first.dense._base
    assert second.dense.search(new[2], 1)[0].tolist() == [5003]
    assert 1 not in second.dense.search(vectors[0], 10)[0].tolist()
    assert [first.dense.search(q, 10)[0].tolist() for q in queries] == before  # old snapshot unchanged
    base_files = sorted(p.name for p in store.dir.glob("v*/dense-base-*.faiss"))
    assert len(base_files) == 2 and len(set(base_files)) == 1  # one base, hard-linked into both versions
    fresh = IndexStore(tmp_path, "m", dense_config=approx).load()
    assert fresh is not None and fresh.size == second.size
    assert fresh.dense.search(new[4], 1)[0].tolist() == [5005]


def test_merge_is_written_as_a_new_base_and_readers_follow(tmp_path, corpus, approx):
    ids, vectors = corpus
    store = IndexStore(tmp_path, "m", dense_config=approx)
    with store.writer_lock():
        snapshot = store.empty(DIM)
        snapshot.dense.add(ids[:2000], vectors[:2000])
        assert snapshot.dense.needs_merge()
        snapshot.dense.merge()
        store.write(snapshot)
    reader = IndexReader(IndexStore(tmp_path, "m", dense_config=approx))
    old_base = reader.snapshot().dense.base_id
    with store.writer_lock():
        writer = store.load(lazy_dense=True)
        writer.dense.add(ids[2000:], vectors[2000:])  # past delta_max
        assert writer.dense.needs_merge()
        writer.dense.merge()
        store.write(writer)
    snap = reader.snapshot()

    assert snap.dense.base_id != old_base and snap.dense.delta.ntotal == 0 and snap.size == len(ids)
    assert recall(snap.dense, ids, vectors, unit(10, seed=8), 10) >= 0.95
