"""The personal shape's background worker: one thread, no Redis.

It runs tasks by name, in order, one at a time, through the function it is
given (``ingestion.tasks.run``: the same table Celery runs in the team
shape): ingestion is CPU-bound and torch already uses every core, so one
thread loses nothing.  Periodic tasks are resubmitted after each run, as
Celery beat would send them.  ``on_start`` runs once the thread is up (the
tasks module re-queues what a previous process left behind).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from django.db import close_old_connections

log = logging.getLogger(__name__)


class LocalWorker:
    def __init__(self, run: Callable[[str, int | None], object], *,
                 on_start: Callable[[LocalWorker], None] | None = None) -> None:
        self._run_task = run
        self._on_start = on_start
        # (due, order, task, arg, every): ``every`` > 0 resubmits the task that long after each run.
        self._queue: list[tuple[float, int, str, int | None, float]] = []
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
        if self._on_start is not None:
            close_old_connections()
            self._on_start(self)

    def submit(self, task: str, arg: int | None, *, delay: float = 0, every: float = 0) -> None:
        if self._thread is None:
            self.start()
        with self._cv:
            heapq.heappush(self._queue, (time.monotonic() + delay, next(self._counter), task, arg, every))
            self._cv.notify()

    def idle(self) -> bool:
        """Nothing running and nothing due, periodic tasks aside."""
        with self._cv:
            now = time.monotonic()
            return not self.busy and not any(due <= now and not every for due, _, _, _, every in self._queue)

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
                _, _, task, arg, every = heapq.heappop(self._queue)
                self.busy = True
            try:
                close_old_connections()
                self._run_task(task, arg)
            except Exception:
                log.exception("background task %s(%s) failed", task, arg)
            finally:
                close_old_connections()
                with self._cv:
                    self.busy = False
            if every:
                self.submit(task, arg, delay=every, every=every)
