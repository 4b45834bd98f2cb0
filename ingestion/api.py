"""The ingestion facade other apps call: enqueue work, embed queries.

Where work runs is a setting (``CAIRN_TASKS``):

* ``celery`` — team shape: tasks go to Redis, workers on the ``ingest`` and
  ``index`` queues pick them up (``ingestion.tasks``);
* ``local``  — personal shape: an in-process background thread
  (``ingestion.local_worker``), no Redis;
* ``inline`` — run at once in the calling thread (the command line, tests of
  the services).

Enqueueing always happens after the surrounding transaction commits, so a
worker never looks for a job that is not visible yet.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
from django.conf import settings
from django.db import transaction

from ingestion.models import IngestionJob
from kb.retrieval.dense import DenseConfig

TASK_INGEST = "cairn.ingest.process"
TASK_INDEX = "cairn.index.apply"
TASK_COMPACT = "cairn.index.compact"
TASK_REAP = "cairn.index.reap"
TASK_AUDIT_RETENTION = "cairn.index.audit_retention"


def embedding_model_id() -> str:
    """The model searches use now (``ACTIVE_MODEL``; see ``ingestion.model_switch``)."""
    from ingestion.model_switch import active_model

    return active_model().model_id


def embed_query(text: str) -> np.ndarray:
    from ingestion.model_switch import active_embedder

    return active_embedder().encode_query(text)


def dense_config() -> DenseConfig:
    from ingestion.model_switch import dense_config as config

    return config()


def sniff_kind(data: bytes) -> str:
    """The document kind detected from content; raises ``UnsupportedFile`` with a readable reason."""
    from ingestion.parsers import ParseError, sniff

    try:
        return sniff(data)
    except ParseError as exc:
        raise UnsupportedFile(str(exc)) from exc


class UnsupportedFile(Exception):
    """The content is not a type Cairn can read (empty, binary, an archive…)."""


def job_for_version(version_id: int) -> IngestionJob | None:
    return IngestionJob.objects.filter(version_id=version_id).first()


def enqueue_ingest(job_id: int, *, countdown: float = 0) -> None:
    transaction.on_commit(lambda: dispatch(TASK_INGEST, job_id, countdown))


def enqueue_index(*, compact: bool = False) -> None:
    transaction.on_commit(lambda: dispatch(TASK_COMPACT if compact else TASK_INDEX, None, 0))


_deferred = threading.local()


@contextlib.contextmanager
def deferred() -> Iterator[list[tuple[str, int | None]]]:
    """Collect this thread's dispatches instead of sending them (the command line runs them itself)."""
    collected: list[tuple[str, int | None]] = []
    _deferred.collected = collected
    try:
        yield collected
    finally:
        _deferred.collected = None


def dispatch(task: str, arg: int | None, countdown: float) -> None:
    collected = getattr(_deferred, "collected", None)
    if collected is not None:
        collected.append((task, arg))
        return
    mode = settings.CAIRN_TASKS
    if mode == "celery":
        from config.celery import app

        app.send_task(task, args=[arg] if arg is not None else [], countdown=countdown or None)
    elif mode == "local":
        from ingestion.local_worker import worker

        worker().submit(task, arg, delay=countdown)
    else:
        from ingestion.local_worker import run_task

        run_task(task, arg)


def job_create(version_id: int) -> IngestionJob:
    """Create the job of a new version and queue it (after commit)."""
    job = IngestionJob.objects.create(version_id=version_id, max_attempts=settings.CAIRN_JOB_MAX_ATTEMPTS)
    enqueue_ingest(job.pk)
    return job


def job_reprocess(job: IngestionJob) -> bool:
    from ingestion.services import job_reprocess as reprocess

    if reprocess(job):
        enqueue_ingest(job.pk)
        return True
    return False
