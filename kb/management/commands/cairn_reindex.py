from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ingestion.api import index_pass, index_rebuild


class Command(BaseCommand):
    help = "Rebuild the index files from the database (--compact: only purge deleted documents)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--compact", action="store_true")
        parser.add_argument("--no-eval", action="store_true",
                            help="skip re-running the collections' golden sets after a full rebuild")

    def handle(self, *args: object, **options: Any) -> None:
        result = index_pass(compact=True) if options["compact"] else index_rebuild()
        self.stdout.write(f"index version {result.index_version}")
        if not options["compact"] and not options["no_eval"]:
            # Golden sets are small (capped), so re-checking retrieval quality after a rebuild is cheap.
            from kb.golden import golden_evaluate_all

            for run in golden_evaluate_all():
                self.stdout.write(f"golden set of collection {run.collection_id}: {run.questions} questions, "
                                  f"nDCG@10 {run.ndcg10:.3f}, Recall@10 {run.recall10:.3f}, MRR@10 {run.mrr10:.3f}")
