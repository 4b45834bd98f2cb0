"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can serve requests).

No authentication, and nothing secret in either body: probes from a load
balancer, Compose or Kubernetes call them.  ``/api/v1/health`` stays as an
alias of ``/healthz``.  ``/readyz`` answers 503 with the failing checks named
(``{"status": "not ready", "checks": {"redis": "Redis cannot be reached …"}}``)
so that an orchestrator stops sending traffic and an operator sees why.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from kb.readiness import readiness


@never_cache
@require_GET
def healthz_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok", "mode": settings.CAIRN_MODE, "tasks": settings.CAIRN_TASKS})


@never_cache
@require_GET
def readyz_view(request: HttpRequest) -> JsonResponse:
    checks = readiness()
    failing = {name: result for name, result in checks.items() if result != "ok"}
    if failing:
        return JsonResponse({"status": "not ready", "failing": sorted(failing), "checks": checks}, status=503)
    return JsonResponse({"status": "ready", "checks": checks})
