"""Evaluate retrieval on a BEIR-layout dataset through Cairn's real ingestion and search."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from ingestion.management.commands.cairn_ingest import resolve_user
from kb.evaluation import evaluate, ingest_corpus, load_beir


def run_jobs_here(job_ids: list[int]) -> None:
    from ingestion.indexing import index_pass
    from ingestion.services import run_ingest_job

    for i, job_id in enumerate(tqdm(job_ids, desc="ingest", unit="doc"), 1):
        run_ingest_job(job_id)
        if i % 2000 == 0:
            index_pass()
    while index_pass().indexed_versions:
        pass


class Command(BaseCommand):
    help = "Ingest a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/) and print nDCG@10, Recall@10/100, MRR@10."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dataset", type=Path)
        parser.add_argument("--split", default="test")
        parser.add_argument("--collection", default=None, help="collection name (default: eval-<dataset>)")
        parser.add_argument("--user", default=None)
        parser.add_argument("--modes", default="lexical,dense,hybrid")
        parser.add_argument("--json", type=Path, default=None)

    def handle(self, *args: object, **options: object) -> None:
        path = Path(options["dataset"])  # type: ignore[arg-type]
        if not (path / "corpus.jsonl").is_file():
            raise CommandError(f"{path} is not a BEIR dataset directory (no corpus.jsonl)")
        dataset = load_beir(path, str(options["split"]))
        user = resolve_user(options["user"])  # type: ignore[arg-type]
        collection = ingest_corpus(dataset, user=user, collection_name=str(options["collection"] or f"eval-{path.name}"),
                                   run_jobs=run_jobs_here)
        scores = evaluate(dataset, user=user, collection=collection, modes=str(options["modes"]).split(","))
        self.stdout.write(f"{'mode':<8} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'p50 ms':>7}")
        for s in scores:
            self.stdout.write(f"{s.mode:<8} {s.ndcg10:8.4f} {s.recall10:7.4f} {s.recall100:7.4f} {s.mrr10:7.4f} {s.p50_ms:7.1f}")
        if options["json"]:
            Path(options["json"]).write_text(json.dumps(  # type: ignore[arg-type]
                [{k: v for k, v in s.__dict__.items() if k != "per_query_ms"} | {"p50_ms": s.p50_ms} for s in scores],
                indent=2))
