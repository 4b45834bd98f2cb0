"""The background tasks of ingestion, in one table that Celery and the personal worker both run.

Where a task runs is a setting (``CAIRN_TASKS``):

* ``celery`` — team shape: ``dispatch`` sends the task's name to Redis;
  workers on the ``ingest`` and ``index`` queues run it (the table below is
  registered with Celery when a worker imports this module), and beat runs
  the periodic ones (``config/celery.py`` reads ``periodic_intervals``);
* ``local``  — personal shape: the in-process background thread
  (``ingestion.local_worker``) runs the same table, with the same intervals;
* ``inline`` — run at once in the calling thread (the command line, tests).

``enqueue_*`` dispatch after the surrounding transaction commits, so a
worker never looks for a job that is not visible yet.  Every task is thin
(it calls the pipeline, the index writer or the reaper) and idempotent
(conditional claims, upserts keyed by chunk id), which is what makes
``acks_late`` + ``reject_on_worker_lost`` safe: a task whose worker died is
delivered again and either finishes the work or finds it already done.
The pipeline modules are imported inside the tasks, so the web process,
which only enqueues, never loads the parsers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import kombu.exceptions
import redis.exceptions
from celery import current_app, shared_task
from django.conf import settings
from django.db import transaction

from ingestion.local_worker import LocalWorker

log = logging.getLogger(__name__)

TASK_INGEST = "cairn.ingest.process"
TASK_INDEX = "cairn.index.apply"
TASK_COMPACT = "cairn.index.compact"
TASK_REAP = "cairn.index.reap"
TASK_AUDIT_RETENTION = "cairn.index.audit_retention"
TASK_AUDIT_ANCHOR = "cairn.index.audit_anchor"
TASK_TUNE = "cairn.ingest.tune_fusion"  # CPU work like ingestion (one query embedding per golden question)


# --- the tasks ------------------------------------------------------------------------------


def ingest_process(job_id: int) -> str:
    """Parse, chunk and embed one job, with the small ones waiting meanwhile if it is small
    (``run_ingest_batch``); then hand them to the index writer, or retry each later."""
    from ingestion.pipeline import run_ingest_batch

    outcomes = run_ingest_batch(int(job_id))
    for outcome in outcomes:
        log.info("ingest job %s: %s", outcome.job_id, outcome.status)
    if any(outcome.status == "EMBEDDING" for outcome in outcomes):
        dispatch(TASK_INDEX)
    for outcome in outcomes:
        if outcome.retry_in is not None:
            dispatch(TASK_INGEST, outcome.job_id,
                     countdown=outcome.retry_in if settings.CAIRN_TASKS != "inline" else 0)
    return outcomes[0].status


def index_apply() -> list[int]:
    from ingestion.indexing import index_pass

    return index_pass().indexed_versions


def index_compact() -> list[int]:
    from ingestion.indexing import index_pass

    return index_pass(compact=True).purged_versions


def jobs_reaper() -> dict[str, list[int]]:
    """Re-queue jobs whose worker or message was lost; start an index pass that is due."""
    from ingestion.indexing import index_due
    from ingestion.pipeline import jobs_reap

    result = jobs_reap()
    for job_id in result.requeued + result.pending:
        dispatch(TASK_INGEST, job_id)
    if result.index_needed or index_due():
        dispatch(TASK_INDEX)
    return {"requeued": result.requeued, "failed": result.failed, "pending": result.pending}


def audit_retention() -> dict[str, object]:
    """Remove audit events past ``CAIRN_AUDIT_RETENTION_YEARS``; writes an ``audit.retention`` event.

    Idempotent: a second run removes nothing more (and says so in its event).
    """
    from access.services import audit_retention_purge

    result = audit_retention_purge()
    return {"removed": result.removed, "through_id": result.through_id}


def audit_anchor() -> dict[str, object]:
    """Append the audit chain's head to ``CAIRN_AUDIT_ANCHOR_FILE`` (a no-op without it). Idempotent."""
    from access.services import audit_anchor_write

    result = audit_anchor_write()
    return {"written": result.written, "id": result.id}


def tune_fusion(collection_id: int) -> str:
    """Run an owner's queued fusion tuning of one collection (``kb.tuning``); idempotent (claims "queued")."""
    from kb.tuning import tuning_run

    return tuning_run(int(collection_id))


@dataclass(frozen=True)
class Task:
    run: Callable[..., object]
    takes_id: bool = False
    # Celery options: acks_late + reject_on_worker_lost only where the task is idempotent.
    celery: dict[str, Any] = field(default_factory=dict)
    every: str | None = None  # periodic: the setting that holds its interval in seconds


_REDELIVERED = {"acks_late": True, "reject_on_worker_lost": True}

TASKS: dict[str, Task] = {
    TASK_INGEST: Task(ingest_process, takes_id=True, celery={
        **_REDELIVERED, "soft_time_limit": settings.CAIRN_INGEST_SOFT_LIMIT,
        "time_limit": settings.CAIRN_INGEST_HARD_LIMIT,
    }),
    TASK_INDEX: Task(index_apply, celery=_REDELIVERED),
    TASK_COMPACT: Task(index_compact, celery=_REDELIVERED, every="CAIRN_COMPACT_INTERVAL"),
    TASK_REAP: Task(jobs_reaper, every="CAIRN_REAPER_INTERVAL"),
    TASK_AUDIT_RETENTION: Task(audit_retention, every="CAIRN_AUDIT_RETENTION_INTERVAL"),
    TASK_AUDIT_ANCHOR: Task(audit_anchor, every="CAIRN_AUDIT_ANCHOR_INTERVAL"),
    TASK_TUNE: Task(tune_fusion, takes_id=True),
}

# Beat's entry names (kept stable: a beat schedule file remembers them).
PERIODIC_NAMES = {TASK_REAP: "reap-stuck-jobs", TASK_COMPACT: "compact-index",
                  TASK_AUDIT_RETENTION: "audit-retention", TASK_AUDIT_ANCHOR: "audit-anchor"}

for _name, _task in TASKS.items():
    shared_task(name=_name, **_task.celery)(_task.run)


def periodic_intervals() -> dict[str, float]:
    """``{task name: seconds between runs}`` of the periodic tasks, from the settings."""
    return {name: float(getattr(settings, task.every)) for name, task in TASKS.items() if task.every}


def run(task: str, arg: int | None = None) -> object:
    """Run one task by name in this thread (the personal worker, the ``inline`` mode)."""
    spec = TASKS.get(task)
    if spec is None:
        raise ValueError(f"unknown task {task!r}")
    if spec.takes_id:
        if arg is None:
            raise ValueError(f"task {task} needs a job id")
        return spec.run(arg)
    return spec.run()


# --- dispatch -------------------------------------------------------------------------------

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


def dispatch(task: str, arg: int | None = None, *, countdown: float = 0) -> None:
    """Send ``task`` where ``CAIRN_TASKS`` says tasks run (now: call ``enqueue_*`` inside transactions)."""
    collected = getattr(_deferred, "collected", None)
    if collected is not None:
        collected.append((task, arg))
        return
    mode = settings.CAIRN_TASKS
    if mode == "celery":
        # The configured app is the process's default (config/celery.py), in every thread.
        try:
            current_app.send_task(task, args=[arg] if arg is not None else [], countdown=countdown or None,
                                  ignore_result=True)
        except (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError) as exc:
            # The work is recorded in the database (a PENDING job, an index pass due): the periodic
            # reaper sends it again once the queue is back. The request that caused it succeeded.
            log.warning("queue unreachable, %s(%s) left to the reaper: %s", task, arg, exc)
    elif mode == "local":
        local_worker().submit(task, arg, delay=countdown)
    else:
        run(task, arg)


def enqueue_tune(collection_id: int) -> None:
    """Run an owner's queued fusion tuning of ``collection_id`` where tasks run, after the commit."""
    transaction.on_commit(lambda: dispatch(TASK_TUNE, collection_id))


def enqueue_ingest(job_id: int) -> None:
    transaction.on_commit(lambda: dispatch(TASK_INGEST, job_id))


def enqueue_index(*, compact: bool = False) -> None:
    transaction.on_commit(lambda: dispatch(TASK_COMPACT if compact else TASK_INDEX))


# --- the personal shape's worker ------------------------------------------------------------


def _recover(worker: LocalWorker) -> None:
    """Whatever a previous process left half-done is re-queued now; the periodic tasks start."""
    from ingestion.models import IngestionJob
    from ingestion.pipeline import jobs_reap

    # One process owns a personal installation: anything "in progress" at
    # start-up belonged to a process that is gone.
    if IngestionJob.objects.filter(status__in=IngestionJob.ACTIVE, ready_to_index=False).exists():
        jobs_reap(stuck_after=0)
    for job_id in IngestionJob.objects.filter(status=IngestionJob.Status.PENDING).values_list("id", flat=True):
        worker.submit(TASK_INGEST, job_id)
    worker.submit(TASK_INDEX, None)
    intervals = periodic_intervals()
    for task, seconds in intervals.items():
        # Retention first runs a minute after start, then on its own interval.
        worker.submit(task, None, delay=60 if task == TASK_AUDIT_RETENTION else seconds, every=seconds)


_worker: LocalWorker | None = None
_worker_lock = threading.Lock()


def local_worker() -> LocalWorker:
    """The personal shape's background worker (started, and its leftovers recovered, on first use)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = LocalWorker(run, on_start=_recover)
        return _worker
