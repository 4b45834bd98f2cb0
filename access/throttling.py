"""Sign-in throttling (django-axes): too many failed sign-ins lock the account and the address out for a while.

Axes counts failures per account and, separately, per client address (the
address ``access.middleware.ClientAddressMiddleware`` resolved: a trusted
proxy's client, never a header from anyone else).  The counts live in
Redis in the team shape, shared by every web process, and in the database
in the personal shape.  A locked-out attempt is answered 429 with
``Retry-After`` and a message saying how long, and written to the audit log.
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import ngettext

from access.models import AuditEvent
from access.services import Actor, audit_record
from access.sso_views import login_context


def client_ip(request: HttpRequest) -> str:
    """Axes' client address: the one the middleware resolved (``REMOTE_ADDR``)."""
    return str(request.META.get("REMOTE_ADDR", ""))


def lockout_seconds() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def locked_out(request: HttpRequest, original_response: HttpResponse | None = None,
               credentials: dict[str, Any] | None = None) -> HttpResponse:
    """The answer to a sign-in while locked out: 429, ``Retry-After``, a clear message; audited."""
    seconds = lockout_seconds()
    minutes = math.ceil(seconds / 60)
    username = str((credentials or {}).get("username") or request.POST.get("username", ""))[:150]
    audit_record(
        actor=Actor(user=None, ip=client_ip(request) or None, request_id=getattr(request, "request_id", "")),
        action="auth.locked_out", target_type="user", target_id=username, outcome=AuditEvent.Outcome.DENIED,
        rule=f"more than {settings.AXES_FAILURE_LIMIT - 1} failed sign-ins for this account or address",
    )
    message = ngettext("Too many failed sign-ins for this account or from this address. Try again in %(minutes)s minute.",
                       "Too many failed sign-ins for this account or from this address. Try again in %(minutes)s minutes.",
                       minutes) % {"minutes": minutes}
    response: HttpResponse
    if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
        response = JsonResponse({"error": {"code": "too_many_requests", "message": message,
                                           "details": {"retry_after": seconds}}}, status=429)
    else:
        response = render(request, "access/login.html", {**login_context(), "form": AuthenticationForm(request), "lockout": message,
                                                         "next": request.POST.get("next", "")}, status=429)
    response["Retry-After"] = str(seconds)
    return response
