"""Who the client is (trusted proxies only), request ids, and the automatic sign-in of personal mode."""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from access import log_context
from access.services import request_audit_scope

_requests_log = logging.getLogger("cairn.requests")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

# Headers a proxy adds about the client it forwards; only a trusted proxy's are believed.
FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                     "HTTP_X_FORWARDED_PORT", "HTTP_X_REAL_IP", "HTTP_FORWARDED", "HTTP_VIA")
PEER_KEY = "CAIRN_PEER_ADDR"            # the socket peer, whatever REMOTE_ADDR became
UNTRUSTED_PROXY_KEY = "CAIRN_UNTRUSTED_PROXY"  # set when an untrusted peer sent forwarding headers
_FOR = re.compile(r'(?:^|[;,\s])for="?\[?([^\]";,\s]+)', re.IGNORECASE)
# Health probes and the metrics scraper: no user is looked up for them (kb/api/health.py).
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/api/v1/health", "/metrics"})
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.count(":") == 1 and "." in value:  # "1.2.3.4:5678" (a port after an IPv4 address)
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    ip = _address(address)
    return ip is not None and any(ip in network for network in proxies)


def forwarded_client(meta: Mapping[str, str], proxies: Sequence[Network]) -> str | None:
    """The client a trusted proxy forwards: the rightmost address of ``X-Forwarded-For`` that is
    not itself a trusted proxy, else ``X-Real-IP``, else ``Forwarded: for=``; None if none is valid."""
    chain = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    for hop in reversed(chain):
        ip = _address(hop)
        if ip is None:
            return None  # a malformed chain: believe none of it
        if not any(ip in network for network in proxies):
            return str(ip)
    for candidate in (meta.get("HTTP_X_REAL_IP", ""), *reversed(_FOR.findall(meta.get("HTTP_FORWARDED", "")))):
        ip = _address(candidate)
        if ip is not None:
            return str(ip)
    return None


class ClientAddressMiddleware:
    """``REMOTE_ADDR`` is the client: the socket peer, or the client a *trusted* proxy forwards.

    Only peers in ``CAIRN_TRUSTED_PROXIES`` may speak for a client: from any
    other peer every forwarding header (``X-Forwarded-For``/``-Proto``/
    ``-Host``, ``X-Real-IP``, ``Forwarded``, ``Via``) is removed before
    anything reads it — so ``CAIRN_BEHIND_TLS_PROXY``'s ``X-Forwarded-Proto``
    is believed from trusted peers only — and the request is marked, so that
    loopback trust (personal sign-in, ``/metrics``) never extends to a proxy
    nobody configured.  The audit log and sign-in throttling read the
    resolved ``REMOTE_ADDR``.  Runs first: the servers Cairn starts pass the
    socket peer through unchanged (uvicorn's own proxy headers are off).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        client, untrusted_proxy = resolve_client(meta)
        meta[PEER_KEY] = meta.get("REMOTE_ADDR", "")
        meta["REMOTE_ADDR"] = client
        if untrusted_proxy:
            for header in FORWARDED_HEADERS:
                meta.pop(header, None)
            meta[UNTRUSTED_PROXY_KEY] = "1"
        return self.get_response(request)


def resolve_client(meta: Mapping[str, str]) -> tuple[str, bool]:
    """``(the client's address, whether an untrusted peer sent forwarding headers)`` for a request's META.

    The one rule, for the middleware above and for the ASGI guard that runs
    before Django reads a body (``config/asgi.py``).
    """
    proxies: Sequence[Network] = settings.CAIRN_TRUSTED_PROXIES
    peer = meta.get("REMOTE_ADDR", "")
    if _trusted(peer, proxies):
        return forwarded_client(meta, proxies) or peer, False
    return peer, any(header in meta for header in FORWARDED_HEADERS)


def loopback_client(meta: Mapping[str, str]) -> bool:
    """Whether a request's client (``resolve_client``) is on this machine and came through no untrusted proxy."""
    client, untrusted_proxy = resolve_client(meta)
    ip = _address(client)
    return not untrusted_proxy and ip is not None and ip.is_loopback


class RequestIdMiddleware:
    """Gives every request an id (kept from ``X-Request-ID`` when well-formed), binds it to the log
    context for the request's duration, echoes it in the response, and logs one line per request.

    The line names the method, the route's path (never the query string, which can hold a
    question's text), the status and the duration; the user id comes from the log context.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)
        # Read back with getattr(request, "request_id", "") by the audit log and the API's errors.
        request.request_id = request_id  # type: ignore[attr-defined]  # HttpRequest's stubs declare no added attributes
        started = time.monotonic()
        with log_context.bound(request, request_id=request_id), request_audit_scope(request_id):
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            if request.path not in PROBE_PATHS:
                _requests_log.info("%s %s %s %.1fms", request.method, request.path, response.status_code,
                                   (time.monotonic() - started) * 1000)
        return response


def is_loopback(request: HttpRequest) -> bool:
    """Whether the client is on this machine: a loopback address, not relayed by a proxy nobody trusted.

    A proxy on the same host (an nginx in front of a personal instance)
    connects from loopback for every client it relays; unless it is listed
    in ``CAIRN_TRUSTED_PROXIES`` (and then its forwarded client decides),
    its requests are not loopback requests.
    """
    if request.META.get(UNTRUSTED_PROXY_KEY):
        return False
    ip = _address(request.META.get("REMOTE_ADDR", ""))
    return ip is not None and ip.is_loopback


class PersonalModeMiddleware:
    """Personal mode has one user and no login: loopback clients are that user.

    Only loopback clients are signed in automatically, so a personal
    instance accidentally exposed on a LAN does not hand out its documents.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.enabled = settings.CAIRN_MODE == "personal"

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Probes and scrapers need no user, and must answer before migrations have created one.
        if request.path in PROBE_PATHS:
            return self.get_response(request)
        if self.enabled and not request.user.is_authenticated and is_loopback(request):
            from access.services import personal_user

            request.user = personal_user()
        return self.get_response(request)


# Every response: scripts, styles, images and connections from this origin only; no plugins, no framing, no
# foreign form targets.  The pages hold no inline script or style attribute (progress bars are sized from
# JS through the CSSOM, which style-src does not restrict); ``data:`` images are the favicon and Swagger
# UI's icons.  A prompt-injected Markdown image to another host therefore loads nothing.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:",
    "font-src 'self'", "connect-src 'self'", "media-src 'none'", "object-src 'none'", "frame-src 'none'",
    "worker-src 'self' blob:", "base-uri 'self'", "form-action 'self'", "frame-ancestors 'none'",
])


class ContentSecurityPolicyMiddleware:
    """Sets ``Content-Security-Policy`` on every response that has none of its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response
