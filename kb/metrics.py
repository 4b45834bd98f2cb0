"""Cairn's Prometheus metrics (``prometheus_client``), safe across several web worker processes.

Two kinds, kept apart because they aggregate differently:

* **Events** — requests, their latency, search and ask latency — are counters
  and histograms that each web worker process updates.  ``prometheus_client``
  runs in multiprocess mode: every process writes its values to memory-mapped
  files in ``PROMETHEUS_MULTIPROC_DIR`` (``$CAIRN_DATA_DIR/metrics``, set by the
  settings before anything imports the library; ``cairn_web`` and
  ``cairn_serve`` empty it at start), and ``GET /metrics`` — whichever worker
  answers it — sums all of them.  So one scrape sees the whole host, whatever
  ``--workers`` is.  Only counters and histograms are used there: they need no
  per-process gauge rule.
* **State** — jobs by state, queue depths, the index's version, size and age,
  and the generation pools' numbers (``inference.metrics``, published by each
  inference worker through Redis) — is read when scraped (``state_families``),
  so it is the same from every process and needs no shared files.

Label values are bounded: routes are URL patterns (``api/v1/documents/<str:document_id>``),
never paths with ids, and an unmatched path is ``unmatched``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from django.http import HttpRequest, HttpResponse
from prometheus_client import Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

HTTP_REQUESTS = Counter("cairn_http_requests", "HTTP requests answered, by route pattern, method and status.",
                        ["route", "method", "status"])
HTTP_LATENCY = Histogram("cairn_http_request_duration_seconds",
                         "Time to the response's headers (a streamed answer goes on after), by route pattern and method.",
                         ["route", "method"], buckets=_LATENCY)
SEARCH_LATENCY = Histogram("cairn_search_duration_seconds",
                           "Search time by leg: scope (permissions), embed (the query), retrieve (dense, lexical "
                           "and fusion), materialise (passages from the database), rerank, and total.",
                           ["leg"], buckets=_LATENCY)
ASK_LATENCY = Histogram("cairn_ask_duration_seconds",
                        "Time to a whole answer (sync) or to the start of its stream (stream).",
                        ["mode"], buckets=_LATENCY)


class Timer:
    """``with timed(SEARCH_LATENCY, leg="embed"):`` — observes the block's duration in seconds."""

    def __init__(self, histogram: Histogram, labels: dict[str, str]) -> None:
        self.histogram, self.labels = histogram, labels

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.histogram.labels(**self.labels).observe(time.perf_counter() - self.started)


def timed(histogram: Histogram, **labels: str) -> Timer:
    return Timer(histogram, labels)


class RequestMetricsMiddleware:
    """Counts every request by route pattern, method and status, and observes its latency."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = (match.route or match.view_name or "unmatched") if match is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        HTTP_REQUESTS.labels(route=route, method=method, status=str(response.status_code)).inc()
        HTTP_LATENCY.labels(route=route, method=method).observe(time.perf_counter() - started)
        return response


_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def multiprocess_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def multiprocess_reset() -> None:
    """Empty the multiprocess directory: a server's start, before its workers write (stale pids' files go)."""
    directory = multiprocess_dir()
    if directory is None or not directory.is_dir():
        return
    for pattern in ("*.db", "generation-*.json"):
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)


# --- generation in web processes (personal shape) -------------------------------------------------
# An in-process generation pool keeps its numbers in this process's ``inference.metrics`` registry.
# With several web processes, each writes its snapshot to the multiprocess directory every few
# seconds, and the one that answers a scrape adds its siblings' (live processes only).

_PUBLISH_EVERY = 2.0
_publisher_started = False
_publisher_lock = threading.Lock()


def _snapshot_path(directory: Path, pid: int) -> Path:
    return directory / f"generation-{pid}.json"


def local_generation_publish_once() -> None:
    from inference.metrics import registry

    directory = multiprocess_dir()
    if directory is None:
        return
    path = _snapshot_path(directory, os.getpid())
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(registry.snapshot()))
    partial.replace(path)


def _publish_forever() -> None:
    while True:
        try:
            local_generation_publish_once()
        except OSError:  # metrics must never fail the process; the next round tries again
            pass
        time.sleep(_PUBLISH_EVERY)


def local_generation_publish_start() -> None:
    """Start (once per process) the thread that publishes this process's generation snapshot."""
    global _publisher_started
    with _publisher_lock:
        if _publisher_started or multiprocess_dir() is None:
            return
        _publisher_started = True
    threading.Thread(target=_publish_forever, name="cairn-generation-metrics", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sibling_generation_snapshots() -> list[tuple[dict[str, str], dict]]:
    """The generation snapshots other live web processes of this host published (not this one's)."""
    directory = multiprocess_dir()
    if directory is None or not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("generation-*.json")):
        try:
            pid = int(path.stem.split("-", 1)[1])
            if pid == os.getpid() or not _alive(pid):
                continue
            found.append(({"pid": str(pid)}, json.loads(path.read_text())))
        except (ValueError, OSError):
            continue
    return found


# --- state, read at scrape time ---------------------------------------------------------------


def gauge(name: str, documentation: str, samples: Iterable[tuple[dict[str, str], float]]) -> Metric:
    samples = list(samples)
    family = GaugeMetricFamily(name, documentation, labels=sorted({k for labels, _ in samples for k in labels}))
    for labels, value in samples:
        family.add_metric([labels.get(k, "") for k in family._labelnames], value)
    return family


STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


def stage_histogram(stages: dict[str, tuple[list[int], float, int]]) -> Metric:
    """``cairn_ingestion_stage_duration_seconds{stage}`` from the jobs' recorded stage times (``ingestion.api``).

    Read from the database at scrape time, so it covers every worker on every host; a job counts in a
    stage once it completed that stage (index: from "ready for the writer" to indexed, the wait included).
    """
    hist = HistogramMetricFamily("cairn_ingestion_stage_duration_seconds",
                                 "Seconds each ingestion stage took per document (parse, chunk, embed, index).",
                                 labels=["stage"])
    for stage, (cumulative, total, count) in stages.items():
        pairs = [(_bound(bound), float(n)) for bound, n in zip(STAGE_BUCKETS, cumulative, strict=True)]
        pairs.append(("+Inf", float(count)))
        hist.add_metric([stage], pairs, total)
    return hist


def index_families() -> Iterator[Metric]:
    """The active model's index: current version, live chunks (of the loaded snapshot), bytes on disk, age."""
    from kb import index

    store = index.index_store()
    version = store.current_version()
    yield gauge("cairn_index_version", "The index version searches read now (0: nothing indexed).", [({}, version)])
    if not version:
        return
    snapshot = index.index_reader().snapshot()
    if snapshot is not None:
        yield gauge("cairn_index_chunks", "Passages in the index searches read now.", [({}, snapshot.size)])
    directory = store.version_dir(version)
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else 0
    yield gauge("cairn_index_size_bytes", "Bytes on disk of the current index version.", [({}, size)])
    try:
        age = time.time() - store.current_file.stat().st_mtime
    except OSError:
        age = 0.0
    yield gauge("cairn_index_age_seconds", "Seconds since the current index version was written.", [({}, age)])


def queue_families(redis_url: str, queues: Iterable[str]) -> Iterator[Metric]:
    """Tasks waiting in each Celery queue (the Redis list of the queue's name)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        yield gauge("cairn_queue_depth", "Tasks waiting in a Celery queue.",
                    [({"queue": q}, client.llen(q)) for q in queues])
    finally:
        client.close()


def _bound(value: float) -> str:
    """A bucket bound as the hand-written exposition wrote it (``1``, ``0.25``), so existing queries still match."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def generation_families(sources: Iterable[tuple[dict[str, str], dict]]) -> Iterator[Metric]:
    """The generation pools' numbers (``inference.metrics`` snapshots: this process's, and each worker's)."""
    from inference.metrics import METRICS

    sources = list(sources)
    for name, (kind, documentation, buckets) in METRICS.items():
        if kind == "histogram":
            rows = [(extra, key, row) for extra, snap in sources
                    for key, row in snap.get("histograms", {}).get(name, [])]
            labelnames = sorted({k for extra, key, _ in rows for k in [*dict(map(tuple, key)), *extra]})
            hist = HistogramMetricFamily(name, documentation, labels=labelnames)
            for extra, key, row in rows:
                labels = {**dict(map(tuple, key)), **extra}
                cumulative, pairs = 0.0, []
                for bound, count in zip(buckets, row[: len(buckets)], strict=True):
                    cumulative += count
                    pairs.append((_bound(bound), cumulative))
                pairs.append(("+Inf", row[-1]))
                hist.add_metric([labels.get(k, "") for k in labelnames], pairs, row[-2])
            if rows:
                yield hist
            continue
        values = [(extra, key, value) for extra, snap in sources
                  for key, value in snap.get("values", {}).get(name, [])]
        if not values:
            continue
        labelnames = sorted({k for extra, key, _ in values for k in [*dict(map(tuple, key)), *extra]})
        family: Metric
        if kind == "counter":
            family = CounterMetricFamily(name.removesuffix("_total"), documentation, labels=labelnames)
        else:
            family = GaugeMetricFamily(name, documentation, labels=labelnames)
        for extra, key, value in values:
            labels = {**dict(map(tuple, key)), **extra}
            family.add_metric([labels.get(k, "") for k in labelnames], value)
        yield family
