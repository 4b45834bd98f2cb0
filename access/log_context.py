"""What a log line is about: the request, the user, the Celery task and job it belongs to.

Context variables, so every log line written while a request or a task runs
carries the same ids without passing them around: ``RequestIdMiddleware``
binds the request, the Celery signal handlers (``config/logs.py``) bind the
task and carry the request id across to it.  The formatter
(``config.logs``) reads them through ``current()``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_request: contextvars.ContextVar[Any] = contextvars.ContextVar("cairn_log_request", default=None)
_fields: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("cairn_log_fields", default=None)


@contextmanager
def bound(request: Any = None, **fields: str | int | None) -> Iterator[None]:
    """Within the block, log lines carry ``fields`` (request_id, user_id, job_id, task…) and the request's user."""
    merged = {**(_fields.get() or {}), **{k: str(v) for k, v in fields.items() if v not in (None, "")}}
    fields_token = _fields.set(merged)
    request_token = _request.set(request) if request is not None else None
    try:
        yield
    finally:
        _fields.reset(fields_token)
        if request_token is not None:
            _request.reset(request_token)


def _user_id(request: Any) -> str | None:
    """The signed-in user's id, if authentication has already run (never triggers a session lookup)."""
    user = request.__dict__.get("user") if request is not None else None
    if user is None:
        return None
    wrapped = getattr(user, "_wrapped", user)  # a SimpleLazyObject not yet evaluated holds a sentinel
    if not getattr(wrapped, "is_authenticated", False):
        return None
    pk = getattr(wrapped, "pk", None)
    return None if pk is None else str(pk)


def current() -> dict[str, str]:
    """The ids bound now (request_id, user_id, job_id, task, task_id), only those that are known."""
    fields = dict(_fields.get() or {})
    user_id = _user_id(_request.get())
    if user_id is not None:
        fields["user_id"] = user_id
    return fields
