"""``manage.py cairn_model_manifest PATH``: record the SHA-256 of every file of a model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.manifest import ManifestError, read_manifest, verify_manifest, write_manifest


class Command(BaseCommand):
    help = (
        "Write cairn-manifest.json (size and SHA-256 of every file) into a model directory, "
        "or check the directory against it with --verify. Run it when installing a model; "
        "loading the model then refuses files that changed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="the model directory (a .gguf file: its directory)")
        parser.add_argument("--verify", action="store_true", help="check instead of writing")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["path"]).expanduser()
        if path.is_file():
            path = path.parent
        try:
            if options["verify"]:
                verify_manifest(path, "require")
                self.stdout.write(f"{path}: all {len(read_manifest(path))} files match the manifest")
                return
            target = write_manifest(path)
        except ManifestError as exc:
            raise CommandError(str(exc)) from exc
        entries = read_manifest(path)
        total = sum(e.size for e in entries)
        self.stdout.write(f"wrote {target} ({len(entries)} files, {total / 1e9:.2f} GB)")
