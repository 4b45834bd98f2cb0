"""Ingest a folder (or files) from the command line, with a progress bar."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from access.services import Actor
from ingestion import api
from ingestion.models import IngestionJob
from kb.cli import resolve_collection, resolve_user
from kb.exceptions import InvalidInput, UnsupportedType
from kb.storage import UploadTooLarge

FINAL = {IngestionJob.Status.INDEXED, IngestionJob.Status.FAILED}


class Command(BaseCommand):
    help = "Upload every file under PATH into a collection and process it (progress bar)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+")
        parser.add_argument("--collection", required=True, help="collection id or name (created if missing)")
        parser.add_argument("--user", default=None)
        parser.add_argument("--no-wait", action="store_true", help="team mode: queue and return")

    def handle(self, *args: object, **options: Any) -> None:
        user = resolve_user(options["user"])
        collection = resolve_collection(user, str(options["collection"]), create=True)
        files = sorted(
            p for raw in options["paths"] for p in ([Path(raw)] if Path(raw).is_file() else Path(raw).rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        )
        if not files:
            raise CommandError("No files found")
        actor = Actor(user=user)
        run_here = settings.CAIRN_TASKS != "celery"
        job_ids: list[int] = []
        with api.deferred() as queued:
            for path in tqdm(files, desc="upload", unit="file"):
                try:
                    with open(path, "rb") as handle:
                        result = api.document_upload(actor=actor, collection=collection, filename=path.name,
                                                     chunks=iter(partial(handle.read, 1 << 20), b""))
                except (InvalidInput, UnsupportedType, UploadTooLarge) as exc:
                    self.stderr.write(f"skipped {path}: {exc}")
                    continue
                if not result.duplicate:
                    job_ids.append(result.version.job.pk)
        if not run_here:
            for task, arg in queued:
                api.dispatch(task, arg)
            if not options["no_wait"]:
                self._wait(job_ids)
        else:
            self._run(job_ids)
        self._report(job_ids)

    def _run(self, job_ids: list[int]) -> None:
        with tqdm(total=len(job_ids), desc="ingest", unit="doc") as bar:
            api.jobs_run_here(job_ids, index_every=50, progress=lambda done: bar.update(done - bar.n))

    def _wait(self, job_ids: list[int]) -> None:
        bar = tqdm(total=len(job_ids), desc="ingest", unit="doc")
        while True:
            done = IngestionJob.objects.filter(pk__in=job_ids, status__in=FINAL).count()
            bar.update(done - bar.n)
            if done >= len(job_ids):
                break
            time.sleep(0.5)
        bar.close()

    def _report(self, job_ids: list[int]) -> None:
        jobs = IngestionJob.objects.filter(pk__in=job_ids).select_related("version__document")
        indexed = sum(1 for j in jobs if j.status == IngestionJob.Status.INDEXED)
        for job in jobs:
            if job.status == IngestionJob.Status.FAILED:
                self.stderr.write(f"FAILED {job.version.document.title}: {job.error}")
        self.stdout.write(f"{indexed} of {len(job_ids)} new documents indexed")
