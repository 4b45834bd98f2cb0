"""Request ids, and the automatic sign-in of personal mode."""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    """Gives every request an id (kept from ``X-Request-ID`` when well-formed)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)
        # Read back with getattr(request, "request_id", "") by the audit log and the API's errors.
        request.request_id = request_id  # type: ignore[attr-defined]  # HttpRequest's stubs declare no added attributes
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


def is_loopback(request: HttpRequest) -> bool:
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


class PersonalModeMiddleware:
    """Personal mode has one user and no login: loopback clients are that user.

    Only loopback clients are signed in automatically, so a personal
    instance accidentally exposed on a LAN does not hand out its documents.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.enabled = settings.CAIRN_MODE == "personal"

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.enabled and not request.user.is_authenticated and is_loopback(request):
            from access.services import personal_user

            request.user = personal_user()
        return self.get_response(request)
