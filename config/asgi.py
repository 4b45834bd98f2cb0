"""The ASGI application: Django behind a guard that refuses a request body before it is read.

Django's ASGI handler reads a whole body — into the system's temporary
directory past 2.5 MB — before any middleware or view runs: a 1.5 GB POST
without credentials filled ``/tmp`` and only then got 401.  The guard runs
first and, for every request that carries a body:

* answers 401 when it brings no credentials (an ``Authorization`` header, a
  session cookie, or — personal mode — a client on this machine), except to
  the sign-in forms;
* answers 413 when ``Content-Length`` says more than the endpoint's limit
  (uploads: ``CAIRN_MAX_UPLOAD_MB`` plus the multipart envelope; everything
  else: ``DATA_UPLOAD_MAX_MEMORY_SIZE``), and while streaming, as soon as a
  body without a length goes past it;
* sends a refusal before reading a byte of the body, then reads and throws
  away the rest for at most ``DRAIN_SECONDS`` / ``DRAIN_BYTES`` (a lingering
  close, as nginx does), so a client still sending reads the refusal instead
  of a broken pipe;
* and Django spools what it reads to ``FILE_UPLOAD_TEMP_DIR``, under the data
  directory, not to the system's temporary directory.

Whether the credentials are *valid* is still Django's and DRF's decision.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import IO, Any

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.db import connections

from config.env import pool_web_database

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_UPLOADS = re.compile(r"^/api/v1/(collections/\d+/documents|documents/\d+/versions)/?$")
_SIGN_IN = re.compile(r"^/(login|admin/login)/$")
_ENVELOPE = 1 << 20  # multipart boundaries and headers around an upload's bytes


class CairnASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        """The middleware chain and the view, run in the request's thread: one hop from the event loop.

        Django's async handler runs the middleware below the innermost
        sync-only one on the event loop, and each ``MiddlewareMixin`` there
        hops to a thread and back for its ``process_request`` and
        ``process_response``; with every view synchronous, that made about
        eight hops per request, all queueing on the one event-loop thread of
        the process under load.  Built as under WSGI and entered once through
        ``sync_to_async``, a request hops once.  Streamed responses are still
        sent by the event loop (``async`` iterators stay ``async``).
        """
        super().load_middleware(is_async=False)
        chain: Callable[[Any], Any] = self._middleware_chain  # type: ignore[has-type]  # set by Django just above
        self._middleware_chain = self.adapt_method_mode(True, chain, False)

    async def read_body(self, receive: Receive) -> IO[bytes]:
        """Django's ``read_body``, spooling to ``FILE_UPLOAD_TEMP_DIR`` (under the data directory)."""
        body_file = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b",
                                                  dir=settings.FILE_UPLOAD_TEMP_DIR)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted()
            if "body" in message:
                body_file.write(message["body"])
            if not message.get("more_body", False):
                break
        body_file.seek(0)
        return body_file


def body_limit(path: str) -> int:
    if _UPLOADS.match(path):
        return settings.CAIRN_MAX_UPLOAD_BYTES + _ENVELOPE
    if path.rstrip("/") == "/v1/chat/completions":
        return int(settings.CAIRN_CHAT_MAX_BYTES)
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) + 64 * 1024


def _meta(scope: Scope) -> dict[str, str]:
    """The parts of a WSGI-style META the client resolution reads, from an ASGI scope."""
    meta = {"REMOTE_ADDR": (scope.get("client") or ("", 0))[0]}
    for name, value in scope.get("headers", []):
        meta["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = value.decode("latin-1")
    return meta


def has_credentials(scope: Scope) -> bool:
    from access.middleware import loopback_client

    meta = _meta(scope)
    if meta.get("HTTP_AUTHORIZATION", "").strip():
        return True
    cookie = meta.get("HTTP_COOKIE", "")
    if re.search(rf"(^|;\s*){re.escape(settings.SESSION_COOKIE_NAME)}=[^;\s]", cookie):
        return True
    return settings.CAIRN_MODE == "personal" and loopback_client(meta)


# A refused request's body is read and thrown away — never kept — for at most this long and this much before
# the connection closes ("lingering close", as nginx does): a client still sending when the server closes
# gets a broken pipe, or a reset that discards the answer, instead of the refusal's clear message.
DRAIN_SECONDS = 5.0
DRAIN_BYTES = 64 * 2**20


async def _refuse(send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]],
                  path: str = "", drain: Receive | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()
    if path.startswith("/v1/"):  # the OpenAI-compatible endpoint: OpenAI's error shape
        kind = "authentication_error" if status == 401 else "invalid_request_error"
        body = json.dumps({"error": {"message": message, "type": kind, "code": code, "param": None}}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *headers]})
    if drain is None:
        await send({"type": "http.response.body", "body": body})
        return
    # The answer goes out first (a client that reads while it sends sees it at once and stops); the
    # response stays open while the rest of the body is discarded, within the bounds above.
    await send({"type": "http.response.body", "body": body, "more_body": True})
    await _discard(drain)
    await send({"type": "http.response.body", "body": b""})


async def _discard(receive: Receive) -> None:
    loop = asyncio.get_running_loop()
    deadline, discarded = loop.time() + DRAIN_SECONDS, 0
    while discarded <= DRAIN_BYTES:
        try:
            async with asyncio.timeout(max(0.0, deadline - loop.time())):  # not wait_for: see TicketSource.aread
                message = await receive()
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return
        discarded += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class RequestBodyGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method", "GET") in _SAFE_METHODS:
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if not _SIGN_IN.match(path) and not has_credentials(scope):
            return await _refuse(send, 401, "not_authenticated", "Authentication credentials were not provided: "
                                 "sign in, or send an API key as 'Authorization: Bearer …'.",
                                 [(b"www-authenticate", b'Bearer realm="cairn"')], path, drain=receive)
        limit = body_limit(path)
        size = f"{limit / 2**20:.0f} MB" if limit >= 2**20 else f"{limit // 1024} KB"
        too_large = f"The request body is larger than this endpoint's limit of {size}."
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _refuse(send, 400, "bad_request", "Content-Length is not a number.", [], path)
            if int(declared) > limit:
                return await _refuse(send, 413, "too_large", too_large, [], path, drain=receive)
        received = 0
        refused = False

        async def limited() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _refuse(send, 413, "too_large", too_large, [], path,
                                  drain=receive if message.get("more_body", False) else None)
                    return {"type": "http.disconnect"}  # Django stops reading and sends nothing
            return message

        await self.app(scope, limited, send)




def _warm_up() -> None:
    """Load the query encoder and the index in a team web process before its first request.

    The first search would otherwise wait for them (seconds).  The URLs —
    and with them every view, serializer and module a request imports — are
    loaded too, and then everything alive is exempted from the cyclic
    garbage collector (``kb.retrieval.embedding.exempt_from_gc``; the
    encoder's load did that once already): those objects live as long as the
    process, and each full collection under load walked them again, 70–130
    ms in which every request of the process stood still.  A personal-mode
    process starts fast and loads them on first use instead.
    """
    if settings.CAIRN_TASKS != "celery":
        return
    import logging

    from django.urls import get_resolver

    from kb import index
    from kb.retrieval.embedding import exempt_from_gc

    try:
        index.active_embedder()
        index.index_reader().snapshot()
    except Exception:  # a missing or broken model or index is reported by the requests that need it
        logging.getLogger(__name__).warning("could not warm up the search path", exc_info=True)
    get_resolver().url_patterns  # noqa: B018  (imports every URL module, the views and what they import)
    gc.collect()  # what start-up left behind is freed, not kept for good
    exempt_from_gc()


def _audit_group_commit() -> None:
    """The web process appends its audit events through one thread, in groups (PostgreSQL; access.services)."""
    from access.services import audit_group_commit

    audit_group_commit()


get_asgi_application()  # django.setup(), once, before the handler is built
from kb.serving import limit_query_threads  # noqa: E402  (after django.setup: it reads settings)

if "default" in settings.DATABASES and hasattr(settings, "CAIRN_DB_POOL_SIZE"):
    # Before anything opens a connection; see config.env.pool_connections.
    pool_web_database(connections, "default", settings.CAIRN_DB_POOL_SIZE, settings.CAIRN_DB_POOL_TIMEOUT)
_audit_group_commit()
limit_query_threads()  # cairn_web did this before its checks loaded FAISS; another ASGI server, here
_warm_up()
application = RequestBodyGuard(CairnASGIHandler())
