"""Retrieval quality on a BEIR dataset (default: ../shared/data/scifact) through Cairn's own code.

    python benchmarks/retrieval_quality.py [--data ../shared/data/scifact] [--data-dir DIR] [--json out.json]
    python benchmarks/retrieval_quality.py --data-dir DIR --modes hybrid --rrf-k 20,60,100
    python benchmarks/retrieval_quality.py --data-dir DIR --fusions grid --json out.json

Ingests the corpus with the real parsers, chunker and embedder into a data
directory (a fresh temp dir, or ``--data-dir`` to reuse one: a second run
skips the ingest), then scores BM25 alone, dense alone, the hybrid fused as
the settings say (``CAIRN_FUSION``…), and the cross-encoder reranked hybrid
when ``CAIRN_RERANKER`` is set (nDCG@10, Recall@10, Recall@100, MRR@10).
``--rrf-k`` repeats the hybrid for each fusion constant; ``--fusions``
scores the hybrid for each listed fusion (``grid``: weighted RRF and convex
combinations, min-max and z-score, at dense weights 0.3–0.7).  Each query asks for 200 chunks (so Recall@100 is
over documents), which makes each leg 200 deep whatever
``CAIRN_SEARCH_CANDIDATES`` says.

On a machine whose cores are shared with other busy processes, ``--threads 1``
is much faster: torch's default of one thread per core spins on contended
cores (measured here: 0.15 s vs 3 s to embed one chunk).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import time
from pathlib import Path

from _setup import ROOT, django_setup, print_table, write_json


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


DEFAULT_FUSIONS = ("rrf:0.5,rrf:0.3,rrf:0.7,"
                   "convex-minmax:0.3,convex-minmax:0.4,convex-minmax:0.5,convex-minmax:0.6,convex-minmax:0.7,"
                   "convex-zscore:0.3,convex-zscore:0.4,convex-zscore:0.5,convex-zscore:0.6,convex-zscore:0.7")


def _fusions(value: str) -> list[tuple[str, str, float]]:
    """``rrf:0.5,convex-minmax:0.4`` → [(method, norm, dense weight)]."""
    if value == "grid":
        value = DEFAULT_FUSIONS
    out = []
    for item in value.split(","):
        if not item.strip():
            continue
        name, _, weight = item.strip().partition(":")
        method, _, norm = name.partition("-")
        out.append((method, norm or "minmax", float(weight or 0.5)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--data-dir", default=None, help="reuse a Cairn data dir (skips re-ingesting)")
    parser.add_argument("--modes", default=None, help="default: lexical,dense,hybrid (+reranked with CAIRN_RERANKER)")
    parser.add_argument("--rrf-k", type=_ints, default=None, help="comma-separated RRF constants to try")
    parser.add_argument("--fusions", type=_fusions, default=None,
                        help="fusions to score besides the configured one, e.g. rrf:0.5,convex-minmax:0.4,"
                             "convex-zscore:0.5 (method-norm:dense weight); 'grid' for a default grid")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a busy machine)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)

    django_setup(args.data_dir)
    from django.conf import settings

    from access.services import personal_user
    from ingestion.api import corpus_ingest, jobs_run_here
    from kb import index
    from kb.evaluation import evaluate, load_beir
    from kb.index import embedding_model_id
    from kb.search import default_fusion

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    # Each query is embedded once, however many fusions are scored (the legs do not change).
    index.embed_query = functools.lru_cache(maxsize=None)(index.embed_query)
    modes = (args.modes or "lexical,dense,hybrid" + (",reranked" if settings.CAIRN_RERANKER else "")).split(",")
    dataset = load_beir(Path(args.data))
    user = personal_user()
    started = time.perf_counter()
    collection = corpus_ingest(dataset, user=user, collection_name="beir",
                               run_jobs=lambda ids: jobs_run_here(ids, index_every=2000))
    ingest_seconds = time.perf_counter() - started
    rows = []
    fused = [m for m in modes if m in ("hybrid", "reranked")]
    for mode in [m for m in modes if m not in fused]:
        rows += _rows(evaluate(dataset, user=user, collection=collection, modes=[mode]), None)
    default = default_fusion()  # what search uses: the settings', leg-checked (kb/retrieval/legcheck.py)
    for rrf_k in args.rrf_k or [settings.CAIRN_RRF_K]:
        config = dataclasses.replace(default, rrf_k=rrf_k)
        rows += _rows(evaluate(dataset, user=user, collection=collection, modes=fused, fusion=config), config,
                      label=" (default)" if config == default else "")
    for method, norm, weight in args.fusions or []:
        config = dataclasses.replace(default, method=method, norm=norm, weight=weight)
        rows += _rows(evaluate(dataset, user=user, collection=collection, modes=["hybrid"], fusion=config), config)
    print_table(f"{Path(args.data).name}: {len(dataset.corpus)} documents, {len(dataset.queries)} queries, "
                f"embedding {embedding_model_id()} (ingest {ingest_seconds:.0f} s)", rows)
    write_json(args.json, {"dataset": Path(args.data).name, "documents": len(dataset.corpus),
                           "queries": len(dataset.queries), "ingest_seconds": ingest_seconds,
                           "embedding_model": embedding_model_id(), "reranker": settings.CAIRN_RERANKER,
                           "default_fusion": default.describe(),
                           "machine": platform.processor() or platform.machine(), "results": rows})


def _rows(scores, fusion, label: str = "") -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    return [
        {"mode": s.mode, "fusion": (fusion.describe() + label) if fusion is not None else "",
         "nDCG@10": s.ndcg10, "Recall@10": s.recall10, "Recall@100": s.recall100, "MRR@10": s.mrr10,
         "p50 ms/query": s.p50_ms}
        for s in scores
    ]


if __name__ == "__main__":
    main()
