"""The dense leg on the GPU against the CPU path, over the same vectors: agreement and latency.

    python benchmarks/gpu/dense.py [--n 1000000] [--queries 1000] [--dim 384] [--json out.json]
    python benchmarks/gpu/dense.py --n 20000 --queries 100 --device cpu     # the device code on CPU tensors

Builds ``--n`` unit vectors (``--data random``: no cluster structure, the
worst case for the CPU's compressed scan, as ``benchmarks/dense.py``;
``clustered``: points around 1,000 centres, queries near points, closer to
real embeddings) and Cairn's ``DenseIndex`` over them with the default
configuration (flat below 100k vectors, ``PQ192x4fs,Refine(SQfp16)`` above).
A second ``DenseIndex`` loads the same saved version as a server's reader
does, sharing the base, with ``device=cuda`` (``--device``): exact search on
the GPU through FAISS's GPU build when it has one, else torch; the table
says which ran.

Reported, without and with a ``--share`` (10 %) permission filter of random
chunk ids: the share of queries whose top-``k`` ids are the same set on the
GPU as on the CPU path (and the mean overlap), each leg against exact search
over the vectors both legs score (the stored ones: float16 rows for the
default approximate base); p50/p95 of one query at a time; and throughput of
``--batch`` queries per ``search_batch`` call, and of ``--concurrency``
threads calling ``search`` as server threads do (coalesced into batches).
CPU queries run on ``--threads`` FAISS threads (1: what one search costs a
server thread); building and the exact ground truth use every core.  At 1M
on a 16-core host the whole run takes a few minutes, most of it building
the CPU index and the CPU leg's 2 × 1,000 queries.

Needs numpy, faiss (faiss-cpu is enough: the GPU leg then runs on torch) and
torch; Django is not imported.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _setup import print_table, write_json  # noqa: E402  (imports no Django)

from kb.retrieval.dense import DenseIndex  # noqa: E402
from kb.retrieval.dense_gpu import resolve_backend  # noqa: E402


def unit_rows(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def make_data(n: int, queries: int, dim: int, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    if kind == "random":
        for at in range(0, n, step):
            out[at:at + step] = unit_rows(rng.standard_normal((min(step, n - at), dim), dtype=np.float32))
        return out, unit_rows(rng.standard_normal((queries, dim), dtype=np.float32))
    centres = unit_rows(rng.standard_normal((1000, dim), dtype=np.float32))
    for at in range(0, n, step):
        rows = min(step, n - at)
        noise = rng.standard_normal((rows, dim), dtype=np.float32) * 0.6 / np.sqrt(dim)
        out[at:at + rows] = unit_rows(centres[rng.integers(0, 1000, rows)] + noise)
    near = out[rng.integers(0, n, queries)] + rng.standard_normal((queries, dim), dtype=np.float32) * 0.4 / np.sqrt(dim)
    return out, unit_rows(near)


def stored_vectors(index: DenseIndex) -> np.ndarray:
    """The vectors both legs score (float16-rounded rows for an SQfp16 base), in id order (ids are 0..n-1)."""
    rows = np.concatenate([np.asarray(b, np.float32) for b in index._base_blocks()])
    out = np.empty_like(rows)
    out[index._row_ids()] = rows
    return out


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> np.ndarray:
    ids = np.arange(len(vectors)) if allowed is None else np.flatnonzero(allowed[:len(vectors)])
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors[ids])
    _, rows = flat.search(queries, k)
    return ids[rows]


def agreement(a: list[np.ndarray], b: list[np.ndarray] | np.ndarray, k: int) -> dict[str, float]:
    same = [set(x[:k].tolist()) == set(y[:k].tolist()) for x, y in zip(a, b, strict=True)]
    overlap = [len(set(x[:k].tolist()) & set(y[:k].tolist())) / k for x, y in zip(a, b, strict=True)]
    return {"same_top_k": float(np.mean(same)), "mean_overlap": float(np.mean(overlap))}


def one_at_a_time(index: DenseIndex, queries: np.ndarray, k: int, allowed: np.ndarray | None
                  ) -> tuple[list[np.ndarray], dict[str, float]]:
    index.search(queries[0], k, allowed)  # warm-up (first kernels, lazy copies)
    found, times = [], []
    for q in queries:
        started = time.perf_counter()
        ids, _ = index.search(q, k, allowed)
        times.append(time.perf_counter() - started)
        found.append(ids)
    ms = sorted(t * 1000 for t in times)
    return found, {"p50_ms": statistics.median(ms), "p95_ms": ms[int(0.95 * (len(ms) - 1))],
                   "qps_one_at_a_time": len(ms) / (sum(ms) / 1000)}


def batched(index: DenseIndex, queries: np.ndarray, k: int, allowed: np.ndarray | None, batch: int
            ) -> tuple[list[np.ndarray], float]:
    index.search_batch(queries[:batch], k, [allowed] * min(batch, len(queries)))  # warm-up
    found: list[np.ndarray] = []
    started = time.perf_counter()
    for at in range(0, len(queries), batch):
        part = queries[at:at + batch]
        found.extend(ids for ids, _ in index.search_batch(part, k, [allowed] * len(part)))
    return found, len(queries) / (time.perf_counter() - started)


def concurrent(index: DenseIndex, queries: np.ndarray, k: int, allowed: np.ndarray | None, threads: int
               ) -> dict[str, float]:
    batcher = index._batcher
    before = (batcher.batches, batcher.requests) if batcher is not None else (0, 0)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda q: index.search(q, k, allowed), queries))
    seconds = time.perf_counter() - started
    batcher = index._batcher
    batches = batcher.batches - before[0] if batcher is not None else 0
    requests = batcher.requests - before[1] if batcher is not None else 0
    return {"qps": len(queries) / seconds, "mean_batch": requests / batches if batches else 1.0}


def device_name(device: str) -> str:
    if device == "torch-cpu":
        return f"CPU tensors ({platform.processor() or platform.machine()})"
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except ImportError:
        pass
    return "GPU (name unknown: torch sees none)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--share", type=float, default=0.1, help="allowed share of the filtered runs")
    parser.add_argument("--data", choices=["random", "clustered"], default="random")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="the GPU leg's device; cpu runs the same code on CPU tensors (to test it)")
    parser.add_argument("--backend", choices=["auto", "faiss", "torch"], default="auto")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads of the CPU leg")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    all_threads = faiss.omp_get_max_threads()  # building and the exact ground truth use every core

    x, queries = make_data(args.n, args.queries, args.dim, args.data)
    ids = np.arange(args.n, dtype=np.int64)
    started = time.perf_counter()
    built = DenseIndex.build(args.dim, ids, x)
    build_s = time.perf_counter() - started
    mask = np.random.default_rng(1).random(args.n) < args.share

    device = "torch-cpu" if args.device == "cpu" else "cuda"
    with tempfile.TemporaryDirectory(prefix="cairn-gpu-dense-") as tmp:
        built.save_dir(tmp)
        cpu = DenseIndex.load_dir(tmp, config=built.config)
        started = time.perf_counter()
        gpu = DenseIndex.load_dir(tmp, config=replace(built.config, device=device, gpu_backend=args.backend), reuse=cpu)
        copy_s = time.perf_counter() - started  # the reader's load: shares the base, copies it to the device
    del built
    backend = resolve_backend(device, args.backend)
    scan = "FAISS GpuIndexFlatIP (exact)" if backend == "faiss" else "torch matmul + topk (exact)"
    stored = stored_vectors(cpu)

    results: dict[str, Any] = {
        "n": args.n, "dim": args.dim, "queries": args.queries, "k": args.k, "data": args.data,
        "share": args.share, "cpu_index": cpu.kind, "cpu_spec": cpu.config.approx_spec if cpu.approximate else "flat",
        "cpu_threads": args.threads, "gpu_device": device_name(device), "gpu_backend": backend, "gpu_scan": scan,
        "build_seconds": build_s, "device_copy_seconds": copy_s, "runs": {},
    }
    rows = []
    for label, allowed in (("no filter", None), (f"{args.share:.0%} filter", mask)):
        faiss.omp_set_num_threads(all_threads)
        truth = exact_top_k(stored, queries, args.k, allowed)
        faiss.omp_set_num_threads(args.threads)
        cpu_found, cpu_t = one_at_a_time(cpu, queries, args.k, allowed)
        gpu_found, gpu_t = one_at_a_time(gpu, queries, args.k, allowed)
        batch_found, batch_qps = batched(gpu, queries, args.k, allowed, args.batch)
        together = concurrent(gpu, queries, args.k, allowed, args.concurrency)
        if allowed is not None:
            assert all(allowed[f].all() for f in gpu_found + batch_found), "a forbidden id was ranked"
        run = {
            "gpu_vs_cpu": agreement(gpu_found, cpu_found, args.k),
            "gpu_batched_vs_cpu": agreement(batch_found, cpu_found, args.k),
            "gpu_vs_exact": agreement(gpu_found, truth, args.k),
            "cpu_vs_exact": agreement(cpu_found, truth, args.k),
            "cpu": cpu_t, "gpu": gpu_t, "gpu_batched_qps": batch_qps, "gpu_concurrent": together,
        }
        results["runs"][label] = run
        rows += [
            {"filter": label, "measure": "same top-10 ids, GPU vs CPU (share of queries / mean overlap)",
             "value": f"{run['gpu_vs_cpu']['same_top_k']:.3f} / {run['gpu_vs_cpu']['mean_overlap']:.4f}"},
            {"filter": label, "measure": f"same top-10 ids, GPU batched ({args.batch}) vs CPU",
             "value": f"{run['gpu_batched_vs_cpu']['same_top_k']:.3f} / {run['gpu_batched_vs_cpu']['mean_overlap']:.4f}"},
            {"filter": label, "measure": "same top-10 ids vs exact over the stored vectors: GPU | CPU",
             "value": f"{run['gpu_vs_exact']['same_top_k']:.3f} | {run['cpu_vs_exact']['same_top_k']:.3f}"},
            {"filter": label, "measure": f"p50 / p95 one query, CPU ({cpu.kind}, {args.threads} thread)",
             "value": f"{cpu_t['p50_ms']:.2f} / {cpu_t['p95_ms']:.2f} ms"},
            {"filter": label, "measure": "p50 / p95 one query, GPU",
             "value": f"{gpu_t['p50_ms']:.3f} / {gpu_t['p95_ms']:.3f} ms"},
            {"filter": label, "measure": f"GPU throughput: batches of {args.batch} | {args.concurrency} threads "
                                         "(mean coalesced batch)",
             "value": f"{batch_qps:,.0f} | {together['qps']:,.0f} q/s ({together['mean_batch']:.1f})"},
        ]
    print_table(f"Dense leg, {args.n:,} x {args.dim} {args.data} vectors, k={args.k}: CPU {results['cpu_spec']} "
                f"vs {results['gpu_scan']} on {results['gpu_device']} (device copy {copy_s:.2f} s)", rows)
    write_json(args.json, results)


if __name__ == "__main__":
    main()
