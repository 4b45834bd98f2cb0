"""Benchmark the BM25 leg: build, add, query speed, memory, and SciFact quality.

    python benchmarks/bm25.py --n 1000000 --queries 200 --json bm25.json
    python benchmarks/bm25.py --n 0 --scifact /work/shared/data/scifact

Synthetic corpus: a Zipf(s) vocabulary of ``--vocab`` terms, document
lengths ~ N(60, 15) (at least 1), queries of 2–4 terms drawn from the same
Zipf, so common terms (posting lists covering most documents) appear in
queries as often as they would at random: a harder load than real queries,
whose stopwords the tokenizer removes.  Everything runs on one thread.

At ``min(n, --ref-docs)`` documents the script also times
``rank_bm25.BM25Okapi.get_scores`` + argsort on ``--ref-queries`` queries
and reports our speed ratio.  ``--scifact DIR`` indexes BEIR SciFact
(title + " " + text) with and without Porter stemming and prints nDCG@10
and Recall@100 on the test qrels (published BM25: nDCG@10 0.665–0.679).
"""

from __future__ import annotations

import os

# One core: pin BLAS/OpenMP pools before numpy loads (numpy's own loops are single-threaded).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kb.retrieval.lexical import BM25Index  # noqa: E402
from kb.retrieval.tokenize import tokenize  # noqa: E402

# ------------------------------------------------------------------ synthetic


class ZipfCorpus:
    """A reproducible synthetic corpus: term ids ~ Zipf(s) over ``vocab`` ranks."""

    def __init__(self, vocab: int, s: float, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        weights = 1.0 / np.arange(1, vocab + 1, dtype=np.float64) ** s
        self.cdf = np.cumsum(weights)
        self.cdf /= self.cdf[-1]
        # Term strings look like words of varied length; they are shared
        # objects, as interned vocabulary strings would be.
        self.words = np.array([f"w{i:x}" for i in range(vocab)], dtype=object)

    def draw(self, count: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, self.rng.random(count)), len(self.cdf) - 1)

    def docs(self, n: int, mean: float = 60.0, sd: float = 15.0) -> list[list[str]]:
        lengths = np.maximum(1, np.rint(self.rng.normal(mean, sd, n))).astype(np.int64)
        tokens = self.words[self.draw(int(lengths.sum()))]
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        flat = tokens.tolist()
        return [flat[a:z] for a, z in zip(bounds[:-1], bounds[1:], strict=True)]

    def queries(self, n: int) -> list[list[str]]:
        lengths = self.rng.integers(2, 5, n)
        return [self.words[self.draw(int(m))].tolist() for m in lengths]


def _percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, q))


def time_queries(index: BM25Index, queries: list[list[str]], k: int) -> dict[str, float]:
    latencies = []
    for query in queries:
        start = time.perf_counter()
        index.search(query, k)
        latencies.append(time.perf_counter() - start)
    total = sum(latencies)
    return {
        "qps": len(queries) / total,
        "p50_ms": _percentile_ms(latencies, 50),
        "p95_ms": _percentile_ms(latencies, 95),
        "mean_ms": total / len(queries) * 1e3,
    }


def reference_comparison(docs: list[list[str]], queries: list[list[str]], k: int) -> dict[str, float]:
    """rank-bm25 get_scores + argsort vs our search, same documents and queries."""
    from rank_bm25 import BM25Okapi

    start = time.perf_counter()
    reference = BM25Okapi(docs, k1=1.2, b=0.75)
    ref_build = time.perf_counter() - start
    start = time.perf_counter()
    for query in queries:
        np.argsort(reference.get_scores(query))[::-1][:k]
    ref_per_query = (time.perf_counter() - start) / len(queries)
    del reference
    index = BM25Index()
    start = time.perf_counter()
    index.add(np.arange(len(docs)), docs)
    index.search(["warm-up"], 1)
    ours_build = time.perf_counter() - start
    ours = time_queries(index, queries * max(1, 200 // len(queries)), k)
    return {
        "docs": len(docs),
        "queries": len(queries),
        "rank_bm25_build_s": ref_build,
        "rank_bm25_ms_per_query": ref_per_query * 1e3,
        "ours_build_s": ours_build,
        "ours_ms_per_query": ours["mean_ms"],
        "speedup": ref_per_query * 1e3 / ours["mean_ms"],
    }


def synthetic(args: argparse.Namespace) -> dict[str, Any]:
    corpus = ZipfCorpus(args.vocab, args.zipf, args.seed)
    start = time.perf_counter()
    docs = corpus.docs(args.n)
    extra = corpus.docs(1000)
    queries = corpus.queries(args.queries)
    gen_s = time.perf_counter() - start
    tokens = sum(map(len, docs))
    print(f"generated {args.n:,} docs / {tokens:,} tokens in {gen_s:.1f}s", flush=True)

    results: dict[str, Any] = {"n_docs": args.n, "tokens": tokens, "vocab": args.vocab, "zipf_s": args.zipf}
    index = BM25Index()
    start = time.perf_counter()
    for at in range(0, args.n, args.batch):
        index.add(np.arange(at, min(at + args.batch, args.n), dtype=np.int64), docs[at : at + args.batch])
    results["add_s"] = time.perf_counter() - start
    start = time.perf_counter()
    index._ensure_fresh()  # the rebuild a first search would pay
    results["rebuild_s"] = time.perf_counter() - start
    results["build_s"] = results["add_s"] + results["rebuild_s"]
    results["postings"] = int(len(index._rows))
    results["terms"] = index.vocabulary_size
    print(f"built in {results['build_s']:.1f}s (adds {results['add_s']:.1f}s + rebuild {results['rebuild_s']:.1f}s)", flush=True)

    start = time.perf_counter()
    index.add(np.arange(args.n, args.n + 1000, dtype=np.int64), extra)
    results["add_1000_s"] = time.perf_counter() - start
    start = time.perf_counter()
    index._ensure_fresh()
    results["add_1000_rebuild_s"] = time.perf_counter() - start

    start = time.perf_counter()
    index.remove(np.arange(0, 1000, dtype=np.int64))
    index._ensure_fresh()
    results["remove_1000_with_rebuild_s"] = time.perf_counter() - start

    index.search(queries[0], args.k)
    results["search"] = time_queries(index, queries, args.k)
    allowed = np.random.default_rng(args.seed).random(args.n + 1000) < 0.5
    latencies = []
    for query in queries:
        start = time.perf_counter()
        index.search(query, args.k, allowed)
        latencies.append(time.perf_counter() - start)
    results["search_allowed_half"] = {
        "qps": len(queries) / sum(latencies),
        "p50_ms": _percentile_ms(latencies, 50),
        "p95_ms": _percentile_ms(latencies, 95),
    }
    results["memory_bytes"] = index.memory_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lexical.npz"
        start = time.perf_counter()
        index.save(path)
        results["save_s"] = time.perf_counter() - start
        results["file_bytes"] = path.stat().st_size
        start = time.perf_counter()
        loaded = BM25Index.load(path)
        results["load_s"] = time.perf_counter() - start
        del loaded

    # An index pass of many small versions: 2,000 adds of 10 documents, then one rebuild.
    small = corpus.docs(20_000)
    before = index.memory_bytes()
    start = time.perf_counter()
    for v in range(2000):
        first = args.n + 10_000 + 10 * v
        index.add(np.arange(first, first + 10, dtype=np.int64), small[10 * v:10 * v + 10])
    results["small_adds_s"] = time.perf_counter() - start
    results["small_adds_pending_bytes"] = index.memory_bytes() - before
    start = time.perf_counter()
    index._ensure_fresh()
    results["small_adds_rebuild_s"] = time.perf_counter() - start
    del index

    ref_docs = docs[: min(args.n, args.ref_docs)]
    if ref_docs and args.ref_queries:
        print(f"timing rank-bm25 at {len(ref_docs):,} docs ...", flush=True)
        results["reference"] = reference_comparison(ref_docs, queries[: args.ref_queries], args.k)
    return results


def print_synthetic(r: dict[str, Any]) -> None:
    s, a = r["search"], r["search_allowed_half"]
    rows = [
        ("documents / tokens / postings", f"{r['n_docs']:,} / {r['tokens']:,} / {r['postings']:,}"),
        ("vocabulary used", f"{r['terms']:,} of {r['vocab']:,} (Zipf s={r['zipf_s']})"),
        ("build (adds + rebuild)", f"{r['build_s']:.2f} s ({r['add_s']:.2f} + {r['rebuild_s']:.2f})"),
        ("add 1,000 docs: add() / rebuild", f"{r['add_1000_s'] * 1e3:.1f} ms / {r['add_1000_rebuild_s'] * 1e3:.0f} ms"),
        ("remove 1,000 docs incl. rebuild", f"{r['remove_1000_with_rebuild_s'] * 1e3:.0f} ms"),
        ("2,000 adds of 10 docs: add() / held / rebuild",
         f"{r['small_adds_s']:.2f} s / {r['small_adds_pending_bytes'] / 2**20:.1f} MiB / {r['small_adds_rebuild_s']:.2f} s"),
        ("queries/s (1 thread, k=100)", f"{s['qps']:.0f}"),
        ("latency p50 / p95", f"{s['p50_ms']:.2f} / {s['p95_ms']:.2f} ms"),
        ("with a 50% allowed mask: q/s, p50/p95", f"{a['qps']:.0f}, {a['p50_ms']:.2f} / {a['p95_ms']:.2f} ms"),
        ("index arrays in memory", f"{r['memory_bytes'] / 2**20:,.0f} MiB"),
        ("saved file", f"{r['file_bytes'] / 2**20:,.0f} MiB (save {r['save_s']:.1f} s, load {r['load_s']:.1f} s)"),
    ]
    if "reference" in r:
        ref = r["reference"]
        rows.append((
            f"rank-bm25 at {ref['docs']:,} docs",
            f"{ref['rank_bm25_ms_per_query']:.1f} ms/query vs ours {ref['ours_ms_per_query']:.3f} ms "
            f"→ {ref['speedup']:.0f}x",
        ))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


# -------------------------------------------------------------------- SciFact


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def scifact(directory: Path, k: int = 100) -> dict[str, Any]:
    corpus = _read_jsonl(directory / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in _read_jsonl(directory / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with (directory / "qrels" / "test.tsv").open(encoding="utf-8") as handle:
        next(handle)  # header: query-id corpus-id score
        for line in handle:
            qid, did, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    doc_ids = [d["_id"] for d in corpus]
    texts = [f"{d.get('title', '')} {d.get('text', '')}" for d in corpus]
    results: dict[str, Any] = {"docs": len(corpus), "queries": len(qrels)}
    for stem in (False, True):
        start = time.perf_counter()
        docs = [tokenize(t, stem=stem) for t in texts]
        tok_s = time.perf_counter() - start
        index = BM25Index()
        index.add(np.arange(len(docs)), docs)
        ndcgs, recalls = [], []
        for qid, relevant in qrels.items():
            ids, _ = index.search(tokenize(queries[qid], stem=stem), k)
            ranked = [doc_ids[i] for i in ids.tolist()]
            dcg = sum(relevant.get(d, 0) / math.log2(rank + 2) for rank, d in enumerate(ranked[:10]))
            ideal = sorted(relevant.values(), reverse=True)[:10]
            idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
            ndcgs.append(dcg / idcg if idcg else 0.0)
            positive = {d for d, g in relevant.items() if g > 0}
            recalls.append(len(positive.intersection(ranked[:100])) / len(positive) if positive else 0.0)
        n_tokens = sum(map(len, docs))
        results["stem" if stem else "no_stem"] = {
            "ndcg@10": float(np.mean(ndcgs)),
            "recall@100": float(np.mean(recalls)),
            "tokenize_tokens_per_s": n_tokens / tok_s,
        }
    return results


def tokenizer_speed() -> dict[str, float]:
    """Tokens/s on English-like ASCII, non-ASCII Latin/Cyrillic, and Chinese text."""
    samples = {
        "ascii": "The Cairn knowledge base indexes chunks of documents, and ranks them with BM25 "
                 "plus dense vectors; covid-19 v2.0 results were reproduced in 2024. ",
        "unicode_words": "Größere Übersetzungen für Straße und Привет, мир: векторный поиск работает. ",
        "chinese": "Cairn 使用向量检索和关键词检索，结合两种排序结果，回答用户关于自己文档的问题。",
    }
    out: dict[str, float] = {}
    for name, text in samples.items():
        for stem in (False, True):
            block = [text * 8] * 2000
            start = time.perf_counter()
            n = sum(len(tokenize(t, stem=stem)) for t in block)
            out[f"{name}{'_stem' if stem else ''}"] = n / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic documents (0 to skip)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--vocab", type=int, default=200_000)
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent s")
    parser.add_argument("--batch", type=int, default=50_000, help="documents per add() call while building")
    parser.add_argument("--ref-docs", type=int, default=100_000)
    parser.add_argument("--ref-queries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scifact", type=Path, help="BEIR SciFact directory")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    report: dict[str, Any] = {"tokenizer_tokens_per_s": tokenizer_speed()}
    print("tokenizer tokens/s: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in report["tokenizer_tokens_per_s"].items()))
    if args.n > 0:
        report["synthetic"] = synthetic(args)
        print_synthetic(report["synthetic"])
    if args.scifact:
        report["scifact"] = scifact(args.scifact)
        sf = report["scifact"]
        for name in ("no_stem", "stem"):
            print(f"SciFact {name:<8} nDCG@10 {sf[name]['ndcg@10']:.4f}  Recall@100 {sf[name]['recall@100']:.4f}  "
                  f"(tokenize {sf[name]['tokenize_tokens_per_s'] / 1e6:.2f}M tokens/s)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
