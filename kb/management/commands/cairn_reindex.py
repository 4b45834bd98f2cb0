from django.core.management.base import BaseCommand

from ingestion.indexing import index_pass, index_rebuild


class Command(BaseCommand):
    help = "Rebuild the index files from the database (--compact: only purge deleted documents)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--compact", action="store_true")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        result = index_pass(compact=True) if options["compact"] else index_rebuild()
        self.stdout.write(f"index version {result.index_version}")
