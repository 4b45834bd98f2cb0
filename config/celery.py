"""The Celery application and its queues (team shape).

Queues, each consumed by its own pool:

* ``ingest``    — parse, chunk, embed (CPU heavy; any number of workers)
* ``index``     — the single writer of the FAISS/BM25 files (concurrency 1),
                  plus the reaper and compaction
* ``inference`` — generation on GPU workers (one process per GPU)

The tasks and the intervals of the periodic ones live in one table,
``ingestion.tasks``, which the personal shape's in-process worker runs too;
beat's schedule is built from it here.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from config.logs import connect_celery_signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("cairn")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["ingestion", "inference"])
# The process-wide default in every thread, so that code sending a task by name
# (``celery.current_app``) reaches this configured app, not Celery's fallback.
app.set_default()
# Workers log like the web (CAIRN_LOG_FORMAT, settings.LOGGING), with the request's ids carried to each task.
connect_celery_signals()

QUEUE_INGEST = "ingest"
QUEUE_INDEX = "index"
QUEUE_INFERENCE = "inference"


@app.on_after_configure.connect
def _periodic_tasks(sender: Celery, **kwargs: Any) -> None:
    from ingestion.tasks import PERIODIC_NAMES, periodic_intervals

    for task, seconds in periodic_intervals().items():
        sender.add_periodic_task(seconds, sender.signature(task), name=PERIODIC_NAMES[task])
