from typing import Any

from django.core.management.base import BaseCommand, CommandError

from access.audit_review import audit_chain_check


class Command(BaseCommand):
    help = ("Verify the audit log's hash chain (from the start, or from the last retention checkpoint); "
            "exits non-zero naming the first broken link.")

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_chain_check()
        if not report.ok:
            raise CommandError(f"audit chain broken at event {report.first_broken_id}: {report.reason}")
        self.stdout.write(f"audit chain intact: {report.checked} events")
