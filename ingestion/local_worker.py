"""The personal shape's background worker: one thread, no Redis.

It runs the same service functions the Celery tasks call, in order, one at a
time: ingestion is CPU-bound and torch already uses every core, so one
thread loses nothing.  On start it re-queues work a previous run left behind,
and it runs the reaper and compaction on timers like Celery beat would.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections

log = logging.getLogger(__name__)


def run_task(task: str, arg: int | None) -> None:
    """Execute one task by name in this thread (also the ``inline`` task mode)."""
    from ingestion import api
    from ingestion.indexing import index_pass
    from ingestion.services import jobs_reap, run_ingest_job

    if task == api.TASK_INGEST and arg is not None:
        outcome = run_ingest_job(arg)
        if outcome.status == "EMBEDDING":
            api.dispatch(api.TASK_INDEX, None, 0)
        elif outcome.retry_in is not None:
            api.dispatch(api.TASK_INGEST, arg, outcome.retry_in if settings.CAIRN_TASKS != "inline" else 0)
    elif task == api.TASK_INDEX:
        index_pass()
    elif task == api.TASK_COMPACT:
        index_pass(compact=True)
    elif task == api.TASK_AUDIT_RETENTION:
        from access.services import audit_retention_purge

        audit_retention_purge()
    elif task == api.TASK_REAP:
        result = jobs_reap()
        for job_id in result.requeued + result.pending:
            api.dispatch(api.TASK_INGEST, job_id, 0)
        if result.index_needed:
            api.dispatch(api.TASK_INDEX, None, 0)
    else:
        raise ValueError(f"unknown task {task!r}")


class LocalWorker:
    def __init__(self) -> None:
        self._queue: list[tuple[float, int, str, int | None]] = []
        self._counter = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.busy = False

    def start(self) -> None:
        with self._cv:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="cairn-worker", daemon=True)
            self._thread.start()
        self._recover()

    def _recover(self) -> None:
        """Whatever a previous process left half-done is re-queued now."""
        from ingestion import api
        from ingestion.models import IngestionJob
        from ingestion.services import jobs_reap

        close_old_connections()
        # One process owns a personal installation: anything "in progress" at
        # start-up belonged to a process that is gone.
        if IngestionJob.objects.filter(status__in=IngestionJob.ACTIVE, ready_to_index=False).exists():
            jobs_reap(stuck_after=0)
        for job_id in IngestionJob.objects.filter(status=IngestionJob.Status.PENDING).values_list("id", flat=True):
            self.submit(api.TASK_INGEST, job_id)
        self.submit(api.TASK_INDEX, None)
        self.submit(api.TASK_REAP, None, delay=settings.CAIRN_REAPER_INTERVAL, repeat=True)
        self.submit(api.TASK_COMPACT, None, delay=settings.CAIRN_COMPACT_INTERVAL, repeat=True)
        # Retention first runs a minute after start, then on its own interval.
        self.submit(api.TASK_AUDIT_RETENTION, None, delay=60, repeat=True)

    def submit(self, task: str, arg: int | None, *, delay: float = 0, repeat: bool = False) -> None:
        if self._thread is None:
            self.start()
        name = f"{task}@repeat" if repeat else task
        with self._cv:
            heapq.heappush(self._queue, (time.monotonic() + delay, next(self._counter), name, arg))
            self._cv.notify()

    def idle(self) -> bool:
        with self._cv:
            now = time.monotonic()
            return not self.busy and not any(
                due <= now and not name.endswith("@repeat") for due, _, name, _ in self._queue
            )

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and (not self._queue or self._queue[0][0] > time.monotonic()):
                    timeout = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._cv.wait(timeout)
                if self._stopping:
                    return
                _, _, name, arg = heapq.heappop(self._queue)
                self.busy = True
            task, _, repeat = name.partition("@")
            try:
                close_old_connections()
                run_task(task, arg)
            except Exception:
                log.exception("background task %s(%s) failed", task, arg)
            finally:
                close_old_connections()
                with self._cv:
                    self.busy = False
            if repeat:
                from ingestion import api

                interval = {
                    api.TASK_COMPACT: settings.CAIRN_COMPACT_INTERVAL,
                    api.TASK_AUDIT_RETENTION: settings.CAIRN_AUDIT_RETENTION_INTERVAL,
                }.get(task, settings.CAIRN_REAPER_INTERVAL)
                self.submit(task, arg, delay=interval, repeat=True)


_worker: LocalWorker | None = None
_worker_lock = threading.Lock()


def worker() -> LocalWorker:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = LocalWorker()
        return _worker
