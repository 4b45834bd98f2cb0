"""The Celery application and its queues (team shape).

Queues, each consumed by its own pool:

* ``ingest``    — parse, chunk, embed (CPU heavy; any number of workers)
* ``index``     — the single writer of the FAISS/BM25 files (concurrency 1),
                  plus the reaper and compaction
* ``inference`` — generation on GPU workers (one process per GPU)
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("cairn")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["ingestion", "inference"])

QUEUE_INGEST = "ingest"
QUEUE_INDEX = "index"
QUEUE_INFERENCE = "inference"
