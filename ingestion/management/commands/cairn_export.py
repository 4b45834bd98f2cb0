"""Write collections, their documents, chunks and originals to one verifiable archive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.transfer import ArchiveRefused, archive_export


class Command(BaseCommand):
    help = "Export every live collection (or --collection NAME …) to DEST, a tar archive with a SHA-256 manifest."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dest", help="the archive to write, e.g. cairn-2026-12-06.tar")
        parser.add_argument("--collection", action="append", default=None, help="a collection's name (repeatable)")
        parser.add_argument("--audit", action="store_true",
                            help="include the whole audit log (imported as a separate, verifiable log)")

    def handle(self, *args: object, **options: Any) -> None:
        destination = Path(str(options["dest"])).expanduser()
        if destination.is_dir():
            raise CommandError(f"{destination} is a directory: give the archive's file name")
        try:
            counts = archive_export(destination, collection_names=options["collection"], audit=options["audit"])
        except ArchiveRefused as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"cannot write {destination}: {exc.strerror}") from None
        audit = f", {counts['audit_events']} audit events" if options["audit"] else ""
        self.stdout.write(f"exported {counts['collections']} collections, {counts['documents']} documents, "
                          f"{counts['blobs']} originals{audit} to {destination}")
