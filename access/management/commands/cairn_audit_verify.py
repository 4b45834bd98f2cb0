from typing import Any

from django.core.management.base import BaseCommand, CommandError

from access.audit_review import audit_chain_check, audit_verification_record


class Command(BaseCommand):
    help = ("Verify the audit log's hash chain (from the start, or from the last retention checkpoint), the "
            "keyed rows with CAIRN_AUDIT_KEY_FILE, and every anchor in CAIRN_AUDIT_ANCHOR_FILE; lists every "
            "broken link and exits non-zero naming the first.")

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_chain_check()
        audit_verification_record(report)  # exported by /metrics as cairn_audit_chain_ok
        for note in report.notes:
            self.stdout.write(f"note: {note}")
        if not report.ok:
            for broken in report.broken:
                self.stderr.write(f"event {broken.id}: {broken.reason}")
            raise CommandError(f"audit chain broken at event {report.first_broken_id}: {report.reason} "
                               f"({len(report.broken)} finding{'s' if len(report.broken) != 1 else ''})")
        anchors = f", {report.anchors_checked} anchors" if report.anchors_checked else ""
        self.stdout.write(f"audit chain intact: {report.checked} events{anchors}")
