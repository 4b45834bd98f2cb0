"""``GET /metrics``: Cairn's metrics in Prometheus' text format (``prometheus_client``; see ``kb/metrics.py``).

Who may read it: a client presenting ``Authorization: Bearer $CAIRN_METRICS_TOKEN``
(when that setting is set), or a direct loopback client — one whose address
is loopback *and* that came through no proxy (no ``X-Forwarded-For``), so a
reverse proxy on the same host does not open it to the world. Anyone else
gets 404, as if the page did not exist.

The answer sums every web worker process of this host (multiprocess mode),
then adds what is read at scrape time: ingestion jobs by state, Celery queue
depths, the index, and the generation numbers — the web process's own
registry (admission refusals, and in the personal shape the in-process pool)
and every inference worker's latest snapshot, which workers publish to Redis
after each request with the label ``worker="host:pid"``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from access.middleware import is_loopback
from kb import metrics
from kb.api.errors import error_body

logger = logging.getLogger(__name__)
Metric = Any


def metrics_allowed(request: HttpRequest) -> bool:
    token = settings.CAIRN_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), token.encode()):
        return True
    return is_loopback(request)


def _worker_snapshots() -> list[tuple[dict[str, str], dict[str, Any]]]:
    if settings.CAIRN_TASKS != "celery":
        return []
    import redis

    from inference.tasks import METRICS_KEY
    from kb.answering import redis_url

    client = redis.Redis.from_url(redis_url(), socket_timeout=2)
    try:
        keys = sorted(client.scan_iter(match=METRICS_KEY + "*", count=100))
        snapshots = []
        for key, raw in zip(keys, client.mget(keys) if keys else [], strict=True):
            if raw:
                name = key.decode()[len(METRICS_KEY):]
                snapshots.append(({"process": "inference", "worker": name}, json.loads(raw)))
        return snapshots
    finally:
        client.close()


class _State:
    """A prometheus_client collector of what is read at scrape time (``kb.metrics``' second kind)."""

    def collect(self) -> Iterator[Metric]:
        from inference.metrics import registry
        from inference.pool import language_models_loaded, record_gpu_memory
        from ingestion.api import job_counts, job_failure_counts, job_stage_histograms

        up: list[tuple[dict[str, str], float]] = []

        def source(name: str, read: Callable[[], Iterable[Metric]]) -> Iterator[Metric]:
            try:
                families = list(read())
            except Exception:  # one source away (Redis down) must not cost the others
                logger.warning("metrics source %s could not be read", name, exc_info=True)
                up.append(({"source": name}, 0))
                return iter(())
            up.append(({"source": name}, 1))
            return iter(families)

        yield from source("jobs", lambda: [
            metrics.gauge("cairn_ingestion_jobs", "Ingestion jobs by state (INDEXED and FAILED are final).",
                          [({"state": state}, n) for state, n in job_counts().items()]),
            metrics.gauge("cairn_ingestion_failed_jobs", "FAILED ingestion jobs by reason "
                          "(unreadable, no_text, time_budget, memory_budget, too_many_passages, cancelled, "
                          "worker_lost, errors).",
                          [({"reason": reason}, n) for reason, n in job_failure_counts().items()]),
            metrics.stage_histogram(job_stage_histograms(metrics.STAGE_BUCKETS)),
        ])
        yield from source("index", metrics.index_families)
        yield from source("audit", _audit_families)
        if settings.CAIRN_TASKS == "celery":
            yield from source("queues", lambda: metrics.queue_families(settings.CAIRN_REDIS_URL or "",
                                                                       ("ingest", "index", "inference")))
        registry.set("cairn_language_models_loaded", language_models_loaded())
        record_gpu_memory(registry)
        role = "web" if settings.CAIRN_TASKS == "celery" else "personal"
        yield from source("generation", lambda: metrics.generation_families(
            [({"process": role, "pid": str(os.getpid())}, registry.snapshot()),
             *[({"process": role, **labels}, snap) for labels, snap in metrics.sibling_generation_snapshots()],
             *_worker_snapshots()]))
        yield metrics.gauge("cairn_metrics_source_up", "Whether a source of state metrics could be read (1) or not (0).",
                            up)


def _audit_families() -> list[Metric]:
    from access.audit_review import audit_verification_read

    status = audit_verification_read()
    if status is None:  # never verified on this data directory
        return []
    return [
        metrics.gauge("cairn_audit_chain_ok", "Whether the last cairn_audit_verify found the audit chain intact (1) "
                      "or broken (0).", [({}, 1 if status.get("ok") else 0)]),
        metrics.gauge("cairn_audit_chain_verified_timestamp_seconds", "When cairn_audit_verify last ran (Unix time).",
                      [({}, float(status.get("at", 0)))]),
    ]


def exposition() -> bytes:
    """Every metric of this host's web processes, and the state, in Prometheus' text format."""
    scrape = CollectorRegistry(auto_describe=False)
    directory = metrics.multiprocess_dir()
    if directory is not None:
        MultiProcessCollector(scrape, path=str(directory))
    else:
        for collector in (metrics.HTTP_REQUESTS, metrics.HTTP_LATENCY, metrics.SEARCH_LATENCY, metrics.ASK_LATENCY):
            scrape.register(collector)
    scrape.register(_State())
    return generate_latest(scrape)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        return JsonResponse(error_body("not_found", "No such resource."), status=404)
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
