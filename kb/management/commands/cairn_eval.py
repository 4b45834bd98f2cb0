"""Evaluate retrieval (or, with ``--answers``, answers) on a BEIR-layout dataset through Cairn's real paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from ingestion import api
from kb import index
from kb.answer_evaluation import AnswerScores, evaluate_answers, load_answers
from kb.cli import resolve_user
from kb.evaluation import MODES, DatasetError, evaluate, load_beir
from kb.search import fusion_config


def run_jobs_here(job_ids: list[int]) -> None:
    with tqdm(total=len(job_ids), desc="ingest", unit="doc") as bar:
        api.jobs_run_here(job_ids, index_every=2000, progress=lambda done: bar.update(done - bar.n))


class Command(BaseCommand):
    help = (
        "Ingest a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) through Cairn's real pipeline "
        "and print nDCG@10, Recall@10, Recall@100 and MRR@10 for lexical, dense and hybrid retrieval "
        "(and 'reranked' when CAIRN_RERANKER is set). Re-running reuses the ingested collection. "
        "With --answers, asks each question that has gold answers (answers.jsonl) through the ask path "
        "(CAIRN_LLM_BACKEND) and prints EM, F1, answer recall and citation precision."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dataset", type=Path)
        parser.add_argument("--split", default="test")
        parser.add_argument("--collection", default=None, help="collection name (default: eval-<dataset>)")
        parser.add_argument("--user", default=None)
        parser.add_argument("--modes", default=None,
                            help="comma-separated, of lexical,dense,hybrid,reranked "
                                 "(default: the first three, plus reranked when a reranker is configured)")
        parser.add_argument("--json", type=Path, default=None, help="also write the scores to this file")
        parser.add_argument("--answers", action="store_true",
                            help="score answers (EM, F1, answer recall, citation precision) instead of retrieval")
        parser.add_argument("--limit", type=int, default=None,
                            help="with --answers: ask only the first N questions that have gold answers")

    def handle(self, *args: object, **options: Any) -> None:
        path = Path(options["dataset"])
        default_modes = "lexical,dense,hybrid" + (",reranked" if settings.CAIRN_RERANKER else "")
        modes = [m.strip() for m in str(options["modes"] or default_modes).split(",") if m.strip()]
        unknown = [m for m in modes if m not in MODES]
        if unknown or not modes:
            raise CommandError(f"unknown mode(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MODES)}")
        if "reranked" in modes and not settings.CAIRN_RERANKER:
            raise CommandError("mode 'reranked' needs CAIRN_RERANKER (a local cross-encoder directory)")
        limit = options["limit"]
        if limit is not None and (not options["answers"] or limit < 1):
            raise CommandError("--limit needs --answers and a positive number")
        try:
            dataset = load_beir(path, str(options["split"]))
            answers = load_answers(path / "answers.jsonl") if options["answers"] else {}
        except DatasetError as exc:
            raise CommandError(str(exc)) from None
        user = resolve_user(options["user"])
        self.stderr.write(f"{path.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} queries")
        collection = api.corpus_ingest(dataset, user=user, collection_name=str(options["collection"] or f"eval-{path.name}"),
                                   run_jobs=run_jobs_here)
        if options["answers"]:
            self._answers(dataset, answers, user=user, collection=collection, limit=limit, path=path,
                          json_path=options["json"])
            return
        scores = evaluate(dataset, user=user, collection=collection, modes=modes)
        fusion = fusion_config().describe()
        self.stderr.write(f"hybrid fusion: {fusion}")
        self.stdout.write(f"{'mode':<9} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'p50 ms':>7}")
        for s in scores:
            self.stdout.write(
                f"{s.mode:<9} {s.ndcg10:8.4f} {s.recall10:7.4f} {s.recall100:7.4f} {s.mrr10:7.4f} {s.p50_ms:7.1f}"
            )
        if options["json"]:
            reranker = index.active_reranker() if "reranked" in modes else None
            payload = {
                "dataset": path.name, "split": options["split"], "documents": len(dataset.corpus),
                "queries": len(dataset.queries), "embedding_model": index.embedding_model_id(),
                "reranker": reranker.model_id if reranker is not None else None, "fusion": fusion,
                "results": [
                    {k: v for k, v in s.__dict__.items() if k != "per_query_ms"} | {"p50_ms": s.p50_ms}
                    for s in scores
                ],
            }
            Path(options["json"]).write_text(json.dumps(payload, indent=2))

    def _answers(self, dataset: Any, answers: dict[str, list[str]], *, user: Any, collection: Any,
                 limit: int | None, path: Path, json_path: Path | None) -> None:
        total = min(limit or len(answers), len([q for q in dataset.queries if q in answers]))
        with tqdm(total=total, desc="ask", unit="q") as bar:
            try:
                scores: AnswerScores = evaluate_answers(dataset, answers, user=user, collection=collection,
                                                        limit=limit, progress=lambda done: bar.update(done - bar.n))
            except DatasetError as exc:
                raise CommandError(str(exc)) from None
        backend = settings.CAIRN_LLM_BACKEND
        self.stderr.write(f"backend: {backend} {settings.CAIRN_LLM_PATH or ''}".rstrip())
        self.stdout.write(f"{'questions':>9} {'EM':>7} {'F1':>7} {'recall':>7} {'cite-P':>7} {'cited':>6} "
                          f"{'bare':>5} {'fallbk':>6} {'p50 s':>7}")
        self.stdout.write(f"{len(scores.questions):>9} {scores.em:7.4f} {scores.f1:7.4f} {scores.recall:7.4f} "
                          f"{scores.citation_precision:7.4f} {scores.cited:>6} {scores.bare_markers:>5} "
                          f"{scores.fallbacks:>6} {scores.p50_s:7.2f}")
        if json_path:
            payload = {
                "dataset": path.name, "backend": backend, "model": settings.CAIRN_LLM_PATH or None,
                "passages": settings.CAIRN_ASK_PASSAGES, "max_new_tokens": settings.CAIRN_MAX_NEW_TOKENS,
                "scores": scores.summary(),
                "questions": [q.__dict__ for q in scores.questions],
            }
            Path(json_path).write_text(json.dumps(payload, indent=2, ensure_ascii=False))
