"""Retrieval quality on a BEIR dataset (default: ../shared/data/scifact) through Cairn's own code.

    python benchmarks/retrieval_quality.py [--data ../shared/data/scifact] [--json out.json]

Ingests the corpus with the real parsers, chunker and embedder into a scratch
data directory, then scores BM25 alone, dense alone and the RRF hybrid
(nDCG@10, Recall@10, Recall@100, MRR@10).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from _setup import ROOT, django_setup, print_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--data-dir", default=None, help="reuse a Cairn data dir (skips re-ingesting)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    django_setup(args.data_dir)
    from access.services import personal_user
    from kb.evaluation import evaluate, ingest_corpus, load_beir
    from kb.management.commands.cairn_eval import run_jobs_here

    dataset = load_beir(Path(args.data))
    user = personal_user()
    started = time.perf_counter()
    collection = ingest_corpus(dataset, user=user, collection_name="beir", run_jobs=run_jobs_here)
    ingest_seconds = time.perf_counter() - started
    scores = evaluate(dataset, user=user, collection=collection)
    rows = [
        {"mode": s.mode, "nDCG@10": s.ndcg10, "Recall@10": s.recall10, "Recall@100": s.recall100,
         "MRR@10": s.mrr10, "p50 ms/query": s.p50_ms}
        for s in scores
    ]
    print_table(f"{Path(args.data).name}: {len(dataset.corpus)} documents, {len(dataset.queries)} queries "
                f"(ingest {ingest_seconds:.0f} s)", rows)
    write_json(args.json, {"dataset": Path(args.data).name, "documents": len(dataset.corpus),
                           "queries": len(dataset.queries), "ingest_seconds": ingest_seconds,
                           "machine": platform.processor() or platform.machine(), "results": rows})


if __name__ == "__main__":
    main()
