"""The dense leg on a GPU (kb/retrieval/dense_gpu.py): exact, filtered before the top-k, batched.

Without a GPU the same code runs on CPU tensors (``device="torch-cpu"``) and
the FAISS GPU backend runs over a CPU flat index standing in for
``GpuIndexFlatIP``; the tests marked ``gpu`` run the real thing where torch
sees a CUDA device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kb.retrieval import dense_gpu
from kb.retrieval.dense import DenseConfig, DenseIndex
from kb.retrieval.dense_gpu import (
    DenseDeviceUnavailable,
    FaissExactScan,
    SearchBatcher,
    TorchExactScan,
    device_problem,
    resolve_backend,
    resolve_device,
)

DIM = 16
ROOT = Path(__file__).resolve().parents[2]


def unit(rows: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force(ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int,
                allowed: np.ndarray | None = None) -> list[int]:
    keep = np.ones(len(ids), bool) if allowed is None else dense_gpu._allowed_rows(allowed, ids)
    scores = vectors[keep].astype(np.float32) @ query
    return ids[keep][np.argsort(-scores, kind="stable")[:k]].tolist()


def assert_exact_top_k(found: np.ndarray, ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int,
                       allowed: np.ndarray | None = None) -> None:
    """``found`` is a top-k of the allowed rows: as many as brute force finds, allowed, and scoring
    the same k best scores (two rows within float rounding of each other may come in either order)."""
    expected = brute_force(ids, vectors, query, k, allowed)
    found = found[found >= 0]
    assert len(found) == len(expected) and len(set(found.tolist())) == len(found)
    if allowed is not None:
        assert dense_gpu._allowed_rows(allowed, found).all(), "a forbidden chunk was ranked"
    score = {int(i): float(v) for i, v in zip(ids, vectors.astype(np.float32) @ query, strict=True)}
    np.testing.assert_allclose([score[i] for i in found.tolist()], [score[i] for i in expected], atol=1e-5)


def random_mask(size: int, share: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(size) < share


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray]:
    # Ids with gaps and an offset: rows and chunk ids must not be confused.
    return np.arange(5, 3 * 2000 + 5, 3, dtype=np.int64), unit(2000)


@pytest.fixture
def no_gpu(monkeypatch):
    """A host where neither torch nor FAISS sees a GPU (whatever this one has)."""
    monkeypatch.setattr(dense_gpu, "torch_gpu_count", lambda: 0)
    monkeypatch.setattr(dense_gpu, "faiss_gpu_count", lambda: 0)
    resolve_device.cache_clear()
    yield
    resolve_device.cache_clear()


# ------------------------------------------------------------------ the scans


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), share=st.sampled_from([1.0, 0.3, 0.05, 0.004, 0.0]), k=st.integers(1, 40))
def test_the_torch_scan_returns_the_exact_filtered_top_k(seed, share, k):
    ids, vectors = np.arange(7, 1207, dtype=np.int64), unit(1200, seed)
    scan = TorchExactScan([vectors[:500], vectors[500:]], ids, DIM, "cpu")
    queries = unit(3, seed + 1)
    mask = None if share == 1.0 else random_mask(1100, share, seed)  # shorter than the ids: the rest forbidden

    found, scores = scan.search(queries, k, [mask, mask, None])

    for row, query, allowed in zip(range(3), queries, [mask, mask, None], strict=True):
        assert_exact_top_k(found[row], ids, vectors, query, k, allowed)
        assert np.isneginf(scores[row][found[row] < 0]).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), share=st.sampled_from([1.0, 0.3, 0.05, 0.004, 0.0]), k=st.integers(1, 40))
def test_the_faiss_scan_deepens_until_k_allowed_and_scores_rare_ones_on_the_host(seed, share, k):
    """A filter is applied to a deeper unfiltered top-n; equal to filtering first, whatever the share."""
    ids, vectors = np.arange(7, 1207, dtype=np.int64), unit(1200, seed)
    flat = faiss.IndexFlatIP(DIM)  # stands in for GpuIndexFlatIP: same search, same exact results
    flat.add(vectors)
    scan = FaissExactScan(flat, ids, lambda rows: vectors[rows], max_k=64)  # a small cap forces the host fallback
    queries = unit(3, seed + 1)
    mask = None if share == 1.0 else random_mask(1300, share, seed)

    found, _ = scan.search(queries, k, [mask, None, mask])

    for row, query, allowed in zip(range(3), queries, [mask, None, mask], strict=True):
        assert_exact_top_k(found[row], ids, vectors, query, k, allowed)


def test_the_filter_is_applied_before_the_top_k_not_after(corpus):
    """Forbid every one of a query's 200 nearest chunks: a post-filtered top-10 would be empty."""
    ids, vectors = corpus
    index = DenseIndex.build(DIM, ids, vectors, config=DenseConfig(device="torch-cpu"))
    query = vectors[0]
    allowed = np.ones(ids.max() + 1, bool)
    allowed[brute_force(ids, vectors, query, 200)] = False

    found, _ = index.search(query, 10, allowed)

    assert len(found) == 10 and allowed[found].all()
    assert_exact_top_k(found, ids, vectors, query, 10, allowed)


# ------------------------------------------------------- through DenseIndex


def _versioned(tmp_path, config: DenseConfig, ids, vectors) -> DenseIndex:
    """A saved version with a base, a delta and tombstones, loaded as a reader loads it."""
    index = DenseIndex.build(DIM, ids, vectors, config=config)
    index.add(np.array([10_001, 10_002, 10_003]), unit(3, seed=9))
    index.remove(ids[::7])
    tmp_path.mkdir(parents=True, exist_ok=True)
    index.save_dir(tmp_path)
    return DenseIndex.load_dir(tmp_path, config=config)


@pytest.mark.parametrize("base", ["flat", "approximate"])
def test_the_device_path_returns_the_cpu_paths_results(tmp_path, corpus, base):
    ids, vectors = corpus
    tuning = {"approx_above": 1000, "approx_spec": "PQ8x4fs,Refine(SQfp16)", "exact_max": 50} if base == "approximate" else {}
    cpu = _versioned(tmp_path / "cpu", DenseConfig(**tuning), ids, vectors)
    device = DenseIndex.load_dir(tmp_path / "cpu", config=DenseConfig(device="torch-cpu", **tuning), reuse=cpu)
    assert device.kind == base
    queries = unit(40, seed=3)
    mask = random_mask(int(ids.max()) + 10_010, 0.1, seed=4)

    same = 0
    for query in queries:
        for allowed in (None, mask):
            expected, expected_scores = cpu.search(query, 10, allowed)
            found, scores = device.search(query, 10, allowed)
            assert not set(found.tolist()) & set(ids[::7].tolist()), "a deleted chunk was returned"
            if allowed is not None:
                assert allowed[found].all(), "a forbidden chunk was ranked"
            # The same ids (two that score within float rounding may trade places), the same scores.
            same += set(found.tolist()) == set(expected.tolist())
            np.testing.assert_allclose(scores[: len(expected)], expected_scores[: len(scores)], atol=1e-5)

    # Flat: both exact.  Approximate: the device scores the same float16 rows exactly, the
    # CPU a compressed scan's candidates; on 2,000 vectors its depth covers nearly all.
    assert same == 80 if base == "flat" else same >= 76


def test_an_approximate_base_is_searched_exactly_over_its_stored_vectors(corpus):
    ids, vectors = corpus
    config = DenseConfig(approx_above=1000, approx_spec="PQ8x4fs,Refine(SQfp16)", device="torch-cpu")
    index = DenseIndex.build(DIM, ids, vectors, config=config)
    stored = vectors.astype(np.float16).astype(np.float32)  # what the SQfp16 refinement keeps

    for query in unit(20, seed=5):
        assert_exact_top_k(index.search(query, 10)[0], ids, stored, query, 10)


def test_a_batch_of_queries_returns_what_each_query_returns_alone(corpus):
    ids, vectors = corpus
    index = DenseIndex.build(DIM, ids, vectors, config=DenseConfig(device="torch-cpu"))
    queries = unit(12, seed=6)
    masks = [None if i % 3 == 0 else random_mask(int(ids.max()) + 1, 0.02 * i, seed=i) for i in range(12)]

    batch = index.search_batch(queries, 10, masks)

    for (found, scores), query, allowed in zip(batch, queries, masks, strict=True):
        alone = index.search(query, 10, allowed)
        assert found.tolist() == alone[0].tolist()
        np.testing.assert_allclose(scores, alone[1], rtol=1e-6)
    cpu = DenseIndex.build(DIM, ids, vectors).search_batch(queries, 10, masks)
    assert [f.tolist() for f, _ in cpu] == [f.tolist() for f, _ in batch]


def test_concurrent_searches_are_answered_in_batches_each_with_its_own_results(corpus):
    ids, vectors = corpus
    index = DenseIndex.build(DIM, ids, vectors, config=DenseConfig(device="torch-cpu"))
    queries = unit(16, seed=7)
    expected = [index.search(q, 5 + i % 4)[0].tolist() for i, q in enumerate(queries)]
    got: dict[int, list[int]] = {}

    def one(i: int) -> None:
        got[i] = index.search(queries[i], 5 + i % 4)[0].tolist()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [got[i] for i in range(16)] == expected


def test_the_batcher_runs_what_queued_meanwhile_as_one_batch_and_hands_errors_back():
    entered, release = threading.Event(), threading.Event()
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:  # the first batch holds the device while the others queue
            entered.set()
            release.wait(10)
        if -1 in items:
            raise ValueError("bad request")
        return [item * 10 for item in items]

    batcher: SearchBatcher[int, int] = SearchBatcher(run)
    results: dict[int, object] = {}

    def call(item: int) -> None:
        try:
            results[item] = batcher.submit(item)
        except ValueError as exc:
            results[item] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in (0, 1, 2, 3, -1)]
    threads[0].start()
    assert entered.wait(10)
    for thread in threads[1:]:
        thread.start()
    while batcher.waiting < 4:
        release.wait(0.01)
    release.set()
    for thread in threads:
        thread.join(10)

    assert calls[0] == [0] and sorted(calls[1]) == [-1, 1, 2, 3]
    assert results[0] == 0
    assert all(isinstance(results[i], ValueError) for i in (1, 2, 3, -1)), "a failed batch fails its callers"
    assert batcher.submit(4) == 40


# ------------------------------------------------------------ configuration


def test_cuda_without_a_gpu_is_refused_with_a_message_naming_the_setting(no_gpu):
    assert device_problem("cpu") is None and device_problem("auto") is None
    with pytest.raises(DenseDeviceUnavailable, match=r"CAIRN_DENSE_DEVICE=cuda, but no CUDA GPU is visible"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu", "auto falls back to the CPU path"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="CAIRN_DENSE_DEVICE"):
        resolve_device("tpu")


def test_the_start_up_check_stops_on_cuda_without_a_gpu(no_gpu, settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.CAIRN_DENSE_DEVICE = "cuda"
    with pytest.raises(SystemCheckError, match=r"kb\.E001.*CAIRN_DENSE_DEVICE=cuda, but no CUDA GPU"):
        call_command("check")
    settings.CAIRN_DENSE_DEVICE = "cpu"
    call_command("check")


@pytest.mark.skipif(dense_gpu.torch_gpu_count() > 0 or dense_gpu.faiss_gpu_count() > 0, reason="a GPU is visible")
def test_manage_py_check_names_the_setting_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "DJANGO_", "PYTEST"))}
    env.update(CAIRN_DATA_DIR=str(tmp_path), CAIRN_DENSE_DEVICE="cuda", HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "(kb.E001) CAIRN_DENSE_DEVICE=cuda, but no CUDA GPU is visible" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_faiss_backend_needs_a_faiss_gpu_build_and_auto_falls_back_to_torch(no_gpu):
    assert resolve_backend("cuda", "auto") == "torch"
    assert resolve_backend("cuda", "torch") == "torch"
    assert resolve_backend("torch-cpu", "faiss") == "torch"
    with pytest.raises(DenseDeviceUnavailable, match="FAISS's GPU build"):
        resolve_backend("cuda", "faiss")


def test_with_faiss_gpu_classes_cuda_searches_through_them(monkeypatch, corpus, tmp_path):
    """FAISS's GPU path as DenseIndex drives it, with CPU stand-ins for the GPU classes of a GPU build."""
    made: list[object] = []

    class Config:
        device = -1
        useFloat16 = True

    def gpu_flat(resources, dim, config):
        made.append(config)
        return faiss.IndexFlatIP(dim)

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatConfig", Config, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatIP", gpu_flat, raising=False)
    resolve_device.cache_clear()
    try:
        assert resolve_device("auto") == "cuda", "auto: a FAISS GPU build that sees a GPU"
        ids, vectors = corpus
        cpu = _versioned(tmp_path, DenseConfig(), ids, vectors)
        gpu = DenseIndex.load_dir(tmp_path, config=DenseConfig(device="cuda"))
        mask = random_mask(int(ids.max()) + 1, 0.01, seed=8)
        for query in unit(10, seed=8):
            for allowed in (None, mask):
                assert set(gpu.search(query, 10, allowed)[0].tolist()) == set(cpu.search(query, 10, allowed)[0].tolist())
    finally:
        resolve_device.cache_clear()
    assert len(made) == 2, "the base and the delta, each once (loading the reader copied them)"
    assert all(c.device == 0 and c.useFloat16 is False for c in made)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_gpu_and_cpu_return_the_same_top_10(tmp_path, backend):
    if backend == "faiss" and dense_gpu.faiss_gpu_count() == 0:
        pytest.skip("FAISS is not a GPU build here (pip install 'cairn[gpu]')")
    ids, vectors = np.arange(50_000, dtype=np.int64), unit(50_000, seed=11, dim=64)
    cpu = DenseIndex.build(64, ids, vectors)  # flat: exact on both sides
    cpu.save_dir(tmp_path)
    gpu = DenseIndex.load_dir(tmp_path, config=DenseConfig(device="cuda", gpu_backend=backend), reuse=cpu)
    queries = unit(200, seed=12, dim=64)
    mask = random_mask(50_000, 0.1, seed=13)

    for allowed in (None, mask):
        expected = [set(cpu.search(q, 10, allowed)[0].tolist()) for q in queries]
        alone = [set(gpu.search(q, 10, allowed)[0].tolist()) for q in queries]
        batched = [set(found.tolist()) for found, _ in gpu.search_batch(queries, 10, [allowed] * len(queries))]
        # The same ten ids (float rounding may swap a near tie at the tenth place, hence 99 %).
        assert sum(a == b for a, b in zip(alone, expected, strict=True)) >= 198
        assert sum(a == b for a, b in zip(batched, expected, strict=True)) >= 198


@pytest.mark.gpu
def test_an_approximate_base_on_the_gpu_is_exact_over_its_stored_vectors():
    ids, vectors = np.arange(20_000, dtype=np.int64), unit(20_000, seed=14, dim=64)
    config = DenseConfig(approx_above=10_000, approx_spec="PQ32x4fs,Refine(SQfp16)", device="cuda", gpu_backend="torch")
    index = DenseIndex.build(64, ids, vectors, config=config)
    stored = vectors.astype(np.float16).astype(np.float32)
    mask = random_mask(20_000, 0.1, seed=15)

    for query in unit(50, seed=16, dim=64):
        assert_exact_top_k(index.search(query, 10)[0], ids, stored, query, 10)
        assert_exact_top_k(index.search(query, 10, mask)[0], ids, stored, query, 10, mask)


def test_the_gpu_benchmark_runs_here_on_cpu_tensors_and_both_legs_agree(tmp_path):
    """``benchmarks/gpu/dense.py --device cpu``: the script a GPU host runs, on a small index, without Django."""
    out = tmp_path / "dense.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "DJANGO_", "PYTEST"))}
    done = subprocess.run([sys.executable, "benchmarks/gpu/dense.py", "--n", "3000", "--queries", "20", "--dim",
                           "32", "--device", "cpu", "--concurrency", "4", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "same top-10 ids, GPU vs CPU" in done.stdout
    result = json.loads(out.read_text())
    assert result["gpu_backend"] == "torch" and result["cpu_index"] == "flat"
    for run in result["runs"].values():
        assert run["gpu_vs_cpu"]["same_top_k"] == 1.0 and run["gpu_vs_exact"]["same_top_k"] == 1.0
