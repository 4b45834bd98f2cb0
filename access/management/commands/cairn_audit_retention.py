from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from access.services import audit_retention_purge


class Command(BaseCommand):
    help = ("Remove audit events older than CAIRN_AUDIT_RETENTION_YEARS now (the periodic task does this "
            "daily); writes an audit.retention event.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--years", type=int, default=None, help="override CAIRN_AUDIT_RETENTION_YEARS")

    def handle(self, *args: Any, **options: Any) -> None:
        years = options["years"]
        if years is not None and years < 0:
            raise CommandError("--years must be 0 (keep forever) or more")
        result = audit_retention_purge(years=years)
        if result.cutoff is None:
            self.stdout.write("audit retention is off (0 years): nothing removed")
        else:
            self.stdout.write(f"removed {result.removed} audit events older than {result.cutoff.isoformat()}")
