"""One JSON error shape for every API failure: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import errno
import logging
import sys
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from kb.exceptions import InvalidInput, NotFound, UnsupportedType
from kb.processing_messages import processing_message
from kb.storage import UploadTooLarge

log = logging.getLogger(__name__)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


_CODES = {
    400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 413: "too_large", 415: "unsupported_media_type",
    429: "throttled", 503: "unavailable",
}


_FULL = (errno.ENOSPC, errno.EDQUOT)


def unavailable(exc: BaseException | None) -> tuple[int, str, str, int] | None:
    """``(status, code, message, retry after)`` for a failure of what Cairn stands on, not of the request.

    The database away (restarting, unreachable), Redis away, the disk of the
    data directory full: the client is told so, with a status that says
    "not your fault, try again" (503, or 507 for storage), never a 500.
    """
    import kombu.exceptions
    import redis.exceptions
    from django.db import InterfaceError, OperationalError, ProgrammingError

    if isinstance(exc, OperationalError | ProgrammingError) and _not_migrated(exc):
        return 503, "not_set_up", _("The database is not set up for this version of Cairn: the administrator "
                                    "must run `manage.py migrate`."), 60
    if isinstance(exc, OperationalError | InterfaceError):
        return 503, "unavailable", _("The database cannot be reached right now; try again in a moment."), 5
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError
                  | kombu.exceptions.OperationalError):
        return 503, "unavailable", _("The task queue cannot be reached right now; try again in a moment."), 5
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return 507, "insufficient_storage", _("The server's storage is full: nothing was stored. "
                                              "Try again once space has been freed."), 60
    return None


def _not_migrated(exc: BaseException) -> bool:
    """A table or column of Cairn's schema is missing (SQLite: "no such table"; PostgreSQL: 42P01, 42703)."""
    text = str(exc)
    cause = exc.__cause__
    return ("no such table" in text or "no such column" in text
            or getattr(cause, "sqlstate", None) in ("42P01", "42703"))


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    outage = unavailable(exc)
    if outage is not None:
        status_code, code, message, retry = outage
        log.warning("%s: %s: %s", code, type(exc).__name__, exc)
        return Response(error_body(code, message), status=status_code, headers={"Retry-After": str(retry)})
    if isinstance(exc, NotFound):
        _record_denial(context, target_type=str(exc.args[0]) if exc.args else "object",
                       rule="not readable by this user (or does not exist)")
        return Response(error_body("not_found", _not_found_message(str(exc.args[0]) if exc.args else "object")),
                        status=404)
    if isinstance(exc, InvalidInput):
        return Response(error_body("invalid", str(exc)), status=400)
    if isinstance(exc, UnsupportedType):
        return Response(error_body("unsupported_type", processing_message(str(exc))), status=415)
    if isinstance(exc, UploadTooLarge):
        message = _("The file is larger than the %(mb)s MB limit.") % {"mb": exc.limit // (1024 * 1024)}
        return Response(error_body("too_large", message, {"limit_bytes": exc.limit}), status=413)
    if isinstance(exc, exceptions.ValidationError):
        return Response(error_body("invalid", _first_message(exc.detail), exc.detail), status=400)
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.PermissionDenied)):
        _record_denial(context, target_type="api", rule=f"{type(exc).__name__}: {exc}")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: Django's handler500 answers in JSON
    detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
    code = getattr(exc, "default_code", None) or _CODES.get(response.status_code, "error")
    response.data = error_body(str(code), str(detail))
    return response


def _not_found_message(kind: str) -> str:
    """"No such document." in the reader's language; the kinds are the ones ``kb.exceptions.NotFound`` is raised with."""
    messages = {
        "collection": _("No such collection."), "document": _("No such document."), "chunk": _("No such passage."),
        "version": _("No such version."), "conversation": _("No such conversation."),
        "golden question": _("No such golden question."), "resource": _("No such resource."),
        "audit event": _("No such audit event."),
    }
    return messages.get(kind) or _("No such %(kind)s.") % {"kind": kind}


def _record_denial(context: dict[str, Any], *, target_type: str, rule: str) -> None:
    """Every refused API access is an audit event (the answer stays a plain 404/401/403)."""
    from access.services import access_denied_record, actor_from_request

    request = context.get("request")
    if request is None:
        return
    kwargs = context.get("kwargs") or {}
    target_id = kwargs.get(f"{target_type}_id") or next(iter(kwargs.values()), "")
    if not target_id:  # e.g. ?collection=… on search, or "collection" in an ask body
        target_id = request.query_params.get(target_type, "")
        if not target_id and isinstance(getattr(request, "_full_data", None), dict):
            target_id = request._full_data.get(target_type, "")
    access_denied_record(actor=actor_from_request(request), target_type=target_type, target_id=target_id,
                         rule=rule, detail={"method": request.method, "path": request.path[:300]})


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            return f"{field}: {_first_message(value)}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(("/api/", "/v1/"))


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return JsonResponse(error_body("bad_request", _("The request could not be understood.")), status=400)


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body("forbidden", _("You may not do this.")), status=403)
    from django.views.defaults import permission_denied

    return permission_denied(request, exception or Exception())


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body("not_found", _("No such resource.")), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Exception())


def handler500(request: HttpRequest) -> HttpResponse:
    outage = unavailable(sys.exc_info()[1])  # Django calls this while handling the exception
    if outage is not None:
        status_code, code, message, retry = outage
        response: HttpResponse = (JsonResponse(error_body(code, message), status=status_code) if _is_api(request)
                                  else HttpResponse(f"{message}\n", status=status_code,
                                                    content_type="text/plain; charset=utf-8"))
        response["Retry-After"] = str(retry)
        return response
    if not _is_api(request):
        from django.views.defaults import server_error

        return server_error(request)
    return JsonResponse(
        error_body("internal", _("Something went wrong on our side; the request id is in X-Request-ID."),
                   {"request_id": getattr(request, "request_id", "")}),
        status=500,
    )


__all__ = ["exception_handler", "handler400", "handler403", "handler404", "handler500", "status"]
