from django.core.management.base import BaseCommand, CommandError

from access.audit import verify_chain
from access.models import AuditEvent

FIELDS = ("id", "at", "actor_id", "actor_label", "api_key_prefix", "ip", "request_id", "action",
          "target_type", "target_id", "outcome", "rule", "detail", "prev_hash", "hash")


class Command(BaseCommand):
    help = "Verify the audit log's hash chain; exits non-zero at the first broken link."

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        report = verify_chain(AuditEvent.objects.order_by("id").values(*FIELDS).iterator(chunk_size=2000))
        if not report.ok:
            raise CommandError(f"audit chain broken at event {report.first_broken_id}: {report.reason}")
        self.stdout.write(f"audit chain intact: {report.checked} events")
