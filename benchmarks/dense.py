"""Benchmark the dense leg at scale: flat vs approximate, filtered recall, add-1,000 visibility.

    python benchmarks/dense.py --n 1000000 --json bench-results/dense.json

Corpus and queries are random unit vectors (``--dim`` 384, the size of
all-MiniLM-L6-v2 embeddings) — a worst case for approximate search, since
random data has no cluster structure for a graph or an inverted list to
exploit.  Ground truth is exact inner-product search (``IndexFlatIP``).

Reported, for each approximate spec and ``efSearch``: build time, recall@10
vs exact, p50/p95 single-query latency on one thread; then, through
``DenseIndex.search`` as the server calls it, recall and latency under an
allowed set of 10% and of 1% of the ids (random ids, the hardest case: no
locality), with and without the exact fallback; the resident memory of a
fresh process that loads the saved index (what a server pays); and the time
from adding 1,000 vectors to the 1M index until a reader in another process
… here: another ``IndexReader`` … returns them (write a new version through
``IndexStore``, reader reloads sharing the unchanged base).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kb.retrieval.dense import DenseConfig, DenseIndex  # noqa: E402
from kb.retrieval.index_store import IndexReader, IndexSnapshot, IndexStore  # noqa: E402
from kb.retrieval.lexical import BM25Index  # noqa: E402


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for at in range(0, n, step):
        block = rng.standard_normal((min(step, n - at), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[at:at + len(block)] = block
    return out


def exact_topk(x: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    _, rows = flat.search(queries, k)
    return ids[rows]


def recall(found: list[np.ndarray], truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth, strict=True)]))


def timed_search(index: DenseIndex, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
                 ) -> tuple[list[np.ndarray], dict[str, float]]:
    """Wall-clock and CPU (thread) time per query: on a shared, overloaded machine the CPU
    time is what one query costs on a free core; the wall time includes waiting for one."""
    found, lat, cpu = [], [], []
    for q in queries:
        t0, c0 = time.perf_counter(), time.thread_time()
        ids, _ = index.search(q, k, allowed)
        cpu.append(time.thread_time() - c0)
        lat.append(time.perf_counter() - t0)
        found.append(ids)
    ms, cpu_ms = np.asarray(lat) * 1e3, np.asarray(cpu) * 1e3
    return found, {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                   "cpu_p50_ms": float(np.percentile(cpu_ms, 50)), "cpu_p95_ms": float(np.percentile(cpu_ms, 95))}


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_LOADER = """
import sys, time, json
sys.path.insert(0, {root!r})
from pathlib import Path
from kb.retrieval.index_store import IndexStore, IndexReader
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'): return int(line.split()[1]) / 1024
base = rss()
t = time.perf_counter()
snap = IndexReader(IndexStore(Path({root_dir!r}), 'bench')).snapshot()
import numpy as np
snap.dense.search(np.ones({dim}, np.float32) / {dim} ** 0.5, 10)
print(json.dumps({{"load_s": time.perf_counter() - t, "rss_mb": rss(), "rss_before_mb": base}}))
"""


def loader_process(root_dir: Path, dim: int) -> dict[str, float]:
    code = _LOADER.format(root=str(ROOT), root_dir=str(root_dir), dim=dim)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--flat-queries", type=int, default=30, help="single queries timed on the flat index")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--specs", default="PQ192x4fs,Refine(SQfp16);PQ192x4fs,RFlat;PQ192x4fs,Refine(SQ8);HNSW32",
                        help="semicolon-separated FAISS factory strings")
    parser.add_argument("--ef", default="128,512,2048", help="efSearch values to sweep (HNSW specs)")
    parser.add_argument("--depths", default="250,500,1000,2000",
                        help="exact re-ranking depths to sweep (Refine specs)")
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="threads for building (searches use 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    k = args.k
    report: dict[str, Any] = {"n": args.n, "dim": args.dim, "queries": args.queries, "k": k,
                              "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()}

    t = time.perf_counter()
    x = unit_vectors(args.n, args.dim, args.seed)
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    queries = unit_vectors(args.queries, args.dim, args.seed + 1)
    rng = np.random.default_rng(args.seed + 2)
    masks = {}
    truth = {}
    faiss.omp_set_num_threads(args.threads)
    truth["all"] = exact_topk(x, ids, queries, k)
    for share in (0.10, 0.01):
        mask = np.zeros(args.n + 1, bool)
        mask[ids[rng.random(args.n) < share]] = True
        masks[share] = mask
        rows = np.flatnonzero(mask[1:])
        truth[share] = exact_topk(x[rows], ids[rows], queries, k)
    print(f"data + ground truth: {time.perf_counter() - t:.1f}s", flush=True)

    # Flat, single queries on one thread (what one request costs).
    faiss.omp_set_num_threads(1)
    flat = DenseIndex.build(args.dim, ids, x, config=DenseConfig(approx_above=10**12))
    found, lat = timed_search(flat, queries[: args.flat_queries], k)
    report["flat"] = {**lat, "recall@10": recall(found, truth["all"][: args.flat_queries], k)}
    for share, name in ((0.10, "10%"), (0.01, "1%")):
        f, lat = timed_search(flat, queries[: args.flat_queries], k, masks[share])
        report["flat"][f"filtered_{name}"] = {**lat, "recall@10": recall(f, truth[share][: args.flat_queries], k)}
    print("flat", json.dumps(report["flat"]), flush=True)
    del flat

    report["approx"] = []
    for spec in args.specs.split(";"):
        faiss.omp_set_num_threads(args.threads)
        config = DenseConfig(approx_above=1, approx_spec=spec, ef_construction=args.ef_construction,
                             max_ef_search=max(2048, *[int(e) for e in args.ef.split(",")]))
        before = rss_mb()
        t = time.perf_counter()
        index = DenseIndex.build(args.dim, ids, x, config=config)
        build_s = time.perf_counter() - t
        entry: dict[str, Any] = {"spec": spec, "build_s": build_s, "index_rss_mb": rss_mb() - before, "sweep": []}
        print(f"{spec}: built in {build_s:.0f}s", flush=True)
        faiss.omp_set_num_threads(1)
        knob = "ef_search" if "HNSW" in spec else "rerank_depth"
        for value in [int(e) for e in (args.ef if knob == "ef_search" else args.depths).split(",")]:
            tuned = replace(config, **{knob: value})
            index.config = tuned
            found, lat = timed_search(index, queries, k)
            row = {knob: value, "recall@10": recall(found, truth["all"], k), **lat}
            for share, name in ((0.10, "10%"), (0.01, "1%")):
                # The approximate search under the filter alone (no exact fallback) …
                index.config = replace(tuned, exact_max=0)
                f, flat_lat = timed_search(index, queries, k, masks[share])
                row[f"selector_{name}"] = {"recall@10": recall(f, truth[share], k), **flat_lat}
                # … and as the server runs it (exact over the allowed vectors when the set is small).
                index.config = tuned
                f, srv_lat = timed_search(index, queries, k, masks[share])
                row[f"served_{name}"] = {"recall@10": recall(f, truth[share], k), **srv_lat}
            entry["sweep"].append(row)
            print(json.dumps(row), flush=True)
        report["approx"].append(entry)

        # Persist, then measure a fresh serving process and the add-1,000 visibility.
        with tempfile.TemporaryDirectory(prefix="cairn-dense-") as tmp:
            store = IndexStore(Path(tmp), "bench", dense_config=config)
            t = time.perf_counter()
            with store.writer_lock():
                store.write(IndexSnapshot(version=0, model_id="bench", dense=index, lexical=BM25Index()))
            entry["first_write_s"] = time.perf_counter() - t
            del index
            entry["serving_process"] = loader_process(Path(tmp), args.dim)
            print("serving process", entry["serving_process"], flush=True)
            reader = IndexReader(IndexStore(Path(tmp), "bench", dense_config=config))
            reader.snapshot()
            new_ids = np.arange(args.n + 1, args.n + 1001, dtype=np.int64)
            new_vectors = unit_vectors(1000, args.dim, args.seed + 3)
            t = time.perf_counter()
            with store.writer_lock():
                writer = store.load(lazy_dense=True)
                assert writer is not None
                writer.dense.add(new_ids, new_vectors)
                store.write(writer)
            written = time.perf_counter() - t
            snap = reader.snapshot()
            assert snap is not None
            got, _ = snap.dense.search(new_vectors[0], 1)
            visible = time.perf_counter() - t
            entry["add_1000"] = {"write_s": written, "visible_s": visible, "found_new": bool(got[0] == new_ids[0])}
            print("add 1,000", entry["add_1000"], flush=True)
            # The merge the writer runs once the delta passes its limit: HNSW add, not a rebuild.
            t = time.perf_counter()
            writer.dense.merge()
            entry["merge_1000_s"] = time.perf_counter() - t
    report["load_avg_end"] = os.getloadavg()
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


def print_report(r: dict[str, Any]) -> None:
    print(f"\nDense leg, {r['n']:,} x {r['dim']} random unit vectors, k={r['k']}, single-thread queries")
    f = r["flat"]
    print(f"flat: p50 {f['p50_ms']:.1f} ms wall / {f['cpu_p50_ms']:.1f} ms cpu, recall 1.000; "
          f"10% filter p50 {f['filtered_10%']['cpu_p50_ms']:.1f} ms cpu; "
          f"1% filter (exact over the allowed) p50 {f['filtered_1%']['cpu_p50_ms']:.1f} ms cpu")
    for entry in r["approx"]:
        sp = entry["serving_process"]
        print(f"\n{entry['spec']}: build {entry['build_s']:.0f} s, +{entry['index_rss_mb']:.0f} MiB; "
              f"serving process RSS {sp['rss_mb']:.0f} MiB (load {sp['load_s']:.1f} s)")
        knob = "ef_search" if "HNSW" in entry["spec"] else "rerank_depth"
        print(f"{knob:>12}  recall@10  p50/p95 ms wall  p50/p95 ms cpu  | 10% approx recall, cpu p50 "
              "| 10% served | 1% approx | 1% served")
        for row in entry["sweep"]:
            cells = [f"{row[key]['recall@10']:.3f}, {row[key]['cpu_p50_ms']:.1f} ms"
                     for key in ("selector_10%", "served_10%", "selector_1%", "served_1%")]
            print(f"{row[knob]:>12}  {row['recall@10']:.3f}      {row['p50_ms']:>6.1f} / {row['p95_ms']:>6.1f}  "
                  f"{row['cpu_p50_ms']:>6.2f} / {row['cpu_p95_ms']:>6.2f}  | " + " | ".join(cells))
        add = entry["add_1000"]
        print(f"add 1,000 to {r['n']:,}: written {add['write_s']:.2f} s, visible to a reader {add['visible_s']:.2f} s "
              f"(found: {add['found_new']}); later merge into the base {entry['merge_1000_s']:.1f} s; "
              f"first full write {entry['first_write_s']:.1f} s")


if __name__ == "__main__":
    main()
