from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from access.audit_review import audit_chain_check, audit_jsonl_verify, audit_verification_record


class Command(BaseCommand):
    help = ("Verify the audit log's hash chain (from the start, or from the last retention checkpoint), the "
            "keyed rows with CAIRN_AUDIT_KEY_FILE, and every anchor in CAIRN_AUDIT_ANCHOR_FILE; lists every "
            "broken link and exits non-zero naming the first.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--archive", default=None, metavar="FILE.jsonl",
                            help="verify an exported audit log on its own instead (an audit.jsonl, e.g. one an "
                                 "import kept under <data dir>/audit-imports/)")
        parser.add_argument("--key-file", default=None,
                            help="with --archive: the key that install's keyed events were hashed with "
                                 "(default: none; keyed events are then checked for their links only)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["archive"]:
            report = self._archive(Path(str(options["archive"])).expanduser(), options["key_file"])
        else:
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

    def _archive(self, path: Path, key_file: str | None) -> Any:
        key = None
        try:
            if key_file:
                key = Path(key_file).expanduser().read_text().strip().encode()
            lines = path.read_bytes().decode("utf-8").splitlines()
            return audit_jsonl_verify(lines, key=key)
        except OSError as exc:
            raise CommandError(f"cannot read {exc.filename}: {exc.strerror}") from None
        except ValueError as exc:  # a line that is no audit event; UnicodeDecodeError too
            raise CommandError(f"{path}: {exc}") from None
