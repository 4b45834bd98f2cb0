"""``GET /metrics``: generation metrics in Prometheus' text format.

Who may read it: a client presenting ``Authorization: Bearer $CAIRN_METRICS_TOKEN``
(when that setting is set), or a direct loopback client — one whose address
is loopback *and* that came through no proxy (no ``X-Forwarded-For``), so a
reverse proxy on the same host does not open it to the world. Anyone else
gets 404, as if the page did not exist.

The web process renders its own registry (admission refusals, and in the
personal shape the in-process pool) and every inference worker's latest
snapshot, which workers publish to Redis after each request with the label
``worker="host:pid"``.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from access.middleware import is_loopback
from kb.api.errors import error_body


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


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        return JsonResponse(error_body("not_found", "No such resource."), status=404)
    from inference.metrics import registry, render
    from inference.pool import language_models_loaded, record_gpu_memory

    registry.set("cairn_language_models_loaded", language_models_loaded())
    record_gpu_memory(registry)
    role = "web" if settings.CAIRN_TASKS == "celery" else "personal"
    sources = [({"process": role}, registry.snapshot()), *_worker_snapshots()]
    return HttpResponse(render(sources), content_type="text/plain; version=0.0.4; charset=utf-8")
