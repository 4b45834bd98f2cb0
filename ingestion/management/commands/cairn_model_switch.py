from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.model_switch import model_switch
from kb.index import active_model, configured_model
from kb.retrieval.embedding import EmbedderUnavailable


class Command(BaseCommand):
    help = ("Switch searches to the configured embedding model (CAIRN_EMBEDDING_MODEL) blue-green: build its "
            "index alongside, re-embedding every current chunk, while searches keep using the old one; then swap.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", help="a local sentence-transformers directory (default: the configured one)")
        parser.add_argument("--status", action="store_true", help="only show the active and configured models")
        parser.add_argument("--restart", action="store_true",
                            help="discard what an interrupted switch to this model embedded and start over")
        parser.add_argument("--no-eval", action="store_true",
                            help="skip re-running the collections' golden sets after the switch")

    def handle(self, *args: object, **options: Any) -> None:
        if options["status"]:
            self.stdout.write(f"active: {active_model().model_id}\nconfigured: {configured_model().model_id}")
            return
        last = [-1]

        def progress(done: int, total: int) -> None:
            percent = int(100 * done / total) if total else 100
            if percent // 10 != last[0]:
                last[0] = percent // 10
                self.stdout.write(f"re-embedded {done} of {total} chunks")

        try:
            result = model_switch(options["model"], progress=progress, restart=options["restart"])
        except EmbedderUnavailable as exc:
            raise CommandError(str(exc)) from exc
        if not result.switched:
            self.stdout.write(f"{result.active} is already the active model; nothing to do")
            return
        resumed = f" ({result.resumed} resumed from an interrupted run)" if result.resumed else ""
        self.stdout.write(f"switched {result.previous} -> {result.active}: {result.chunks} chunks{resumed}, "
                          f"index version {result.index_version}")
        if not options["no_eval"]:
            from kb.golden import golden_evaluate_all
            from kb.models import EvaluationRun

            for run in golden_evaluate_all(trigger=EvaluationRun.Trigger.MODEL_SWITCH):
                self.stdout.write(f"golden set of collection {run.collection_id}: {run.questions} questions, "
                                  f"nDCG@10 {run.ndcg10:.3f}, Recall@10 {run.recall10:.3f}, MRR@10 {run.mrr10:.3f}")
