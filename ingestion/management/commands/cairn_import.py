"""Load a cairn_export archive into this install, as a named owner; refuses a damaged or changed archive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from access.models import User
from access.services import SYSTEM, personal_user
from ingestion.transfer import ArchiveRefused, archive_import


class Command(BaseCommand):
    help = ("Import a cairn_export archive: every file is checked against its manifest first; the collections "
            "become --owner's (default in personal mode: the local user). Importing it again changes nothing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("src", help="the archive cairn_export wrote")
        parser.add_argument("--owner", default=None, help="the user who will own the imported collections")
        parser.add_argument("--audit-key-file", default=None,
                            help="the source install's CAIRN_AUDIT_KEY_FILE, to prove the keyed events of an "
                                 "exported audit log (without it they are checked for their links only)")

    def handle(self, *args: object, **options: Any) -> None:
        source = Path(str(options["src"])).expanduser()
        if not source.is_file():
            raise CommandError(f"{source}: no such file")
        if options["owner"]:
            owner = User.objects.filter(username=options["owner"]).first()
            if owner is None:
                raise CommandError(f"No user named {options['owner']!r} (create it first, e.g. createsuperuser)")
        elif settings.CAIRN_MODE == "personal":
            owner = personal_user()
        else:
            raise CommandError("--owner is required in team mode")
        key = None
        if options["audit_key_file"]:
            try:
                key = Path(str(options["audit_key_file"])).expanduser().read_text().strip().encode()
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"cannot read the audit key file: {exc}") from None
        try:
            result = archive_import(source, owner=owner, actor=SYSTEM, audit_key=key)
        except ArchiveRefused as exc:
            raise CommandError(f"archive refused: {exc}") from None
        self.stdout.write(f"imported {result.documents_created} documents "
                          f"({result.documents_present} already present, "
                          f"{result.collections_created} new collections) for {owner.get_username()}")
        if result.audit_log:
            unproven = result.audit_log["keyed_unverified"]
            self.stdout.write(f"kept its audit log ({result.audit_log['events']} events, verified"
                              f"{f'; {unproven} keyed events linked only: give --audit-key-file' if unproven else ''})"
                              f" apart from this install's chain: {result.audit_log['stored_as']}")
        for grant in result.grants_skipped:
            self.stdout.write(f"not granted (no such user or group here): {grant}")
