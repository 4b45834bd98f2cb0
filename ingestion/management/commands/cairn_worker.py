"""Start a Celery worker pool of the team shape with the right settings for its queue."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

POOLS = {
    # queue: (default concurrency, extra args)
    "ingest": (2, []),
    "index": (1, []),  # the single writer of the index files: never more than one
    # One process per GPU; the model stays resident in it. Threads, so that the
    # concurrent tasks of one process all feed its one batching scheduler
    # (inference/tasks.py); default concurrency: 2 x CAIRN_GEN_MAX_BATCH.
    "inference": (0, ["--pool", "threads"]),
}


class Command(BaseCommand):
    help = "Run a Celery worker for one pool: ingest, index, inference — or beat (periodic tasks)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("pool", choices=[*POOLS, "beat"])
        parser.add_argument("--concurrency", type=int, default=None)
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args: object, **options: Any) -> None:
        pool = str(options["pool"])
        base = [sys.executable, "-m", "celery", "-A", "config", "--quiet"]  # no banner: log lines only
        if pool == "beat":
            argv = [*base, "beat", "--loglevel", str(options["loglevel"]), "-s",
                    os.path.join(os.environ.get("CAIRN_DATA_DIR", "."), "celerybeat-schedule")]
        else:
            default, extra = POOLS[pool]
            if pool == "inference" and not default:
                from django.conf import settings

                default = 2 * settings.CAIRN_GEN_MAX_BATCH
            concurrency = 1 if pool == "index" else int(options["concurrency"] or default)
            argv = [*base, "worker", "-Q", pool, "-n", f"{pool}@%h", "--concurrency", str(concurrency),
                    "--prefetch-multiplier", "1", "--loglevel", str(options["loglevel"]), *extra]
        os.execv(sys.executable, argv)
