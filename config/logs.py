"""Log lines as JSON objects or as text (``CAIRN_LOG_FORMAT``), with ids and without secrets.

* ``JsonFormatter``: one JSON object per line — ``time`` (UTC, ISO 8601),
  ``level``, ``logger``, ``message``, then whatever the log context knows
  (``request_id``, ``user_id``, ``task``, ``task_id``, ``job_id``) and, for an
  error, ``exception``.  The stdlib's ``json`` does it: a library would add
  a dependency for these forty lines.
* ``TextFormatter``: the same fields on one human-readable line (the
  personal shape's default).
* ``redact()``: both formatters pass the message and the traceback through it,
  so a bearer token, an API key (``cairn_…``), a password or a secret in a
  URL, a query string or ``key=value`` text never reaches the log.
* Celery: ``before_task_publish`` copies the request id and user id into the
  task's headers; ``task_prerun`` binds them, with the task's name, id and
  job id, in the worker (``connect_celery_signals``, called by ``config.celery``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

from access import log_context

_SECRETS = [
    # Authorization: Bearer xyz / Basic xyz
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 [redacted]"),
    # Cairn API keys, anywhere
    (re.compile(r"\bcairn_[A-Za-z0-9]+_[A-Za-z0-9_-]{16,}"), "[redacted-api-key]"),
    # scheme://user:password@host
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/\s:@]*:[^/\s@]*@"), r"\1[redacted]@"),
    # password=…, "token": "…", api_key: …, secret=…, authorization: …
    (re.compile(r"""(?ix)
        (["']?(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?token|refresh[_-]?token|
           client[_-]?secret|authorization|cookie|sessionid|csrftoken)["']?\s*[:=]\s*["']?)
        [^\s"',&;}]+"""), r"\1[redacted]"),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _context(record: logging.LogRecord) -> dict[str, str]:
    fields = log_context.current()
    for key in ("request_id", "user_id", "job_id", "task", "task_id"):
        value = getattr(record, key, None)  # logger.info(..., extra={"job_id": 3}) wins
        if value not in (None, ""):
            fields[key] = str(value)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module's docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **_context(record),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [request_id=… user_id=…]: message``, secrets redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(cairn_context)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = _context(record)
        record.cairn_context = (" [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]") if fields else ""
        return redact(super().format(record))


# --- Celery: the request's ids travel with the task ---------------------------------------

_HEADER_FIELDS = ("request_id", "user_id")
_active: dict[str, Any] = {}


def _before_publish(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    if headers is None:
        return
    for key, value in log_context.current().items():
        if key in _HEADER_FIELDS:
            headers[f"cairn_{key}"] = value


def _task_prerun(task_id: str | None = None, task: Any = None, args: Any = None, **kwargs: Any) -> None:
    request = getattr(task, "request", None)
    fields: dict[str, str | int | None] = {f: getattr(request, f"cairn_{f}", None) for f in _HEADER_FIELDS}
    fields["task"] = getattr(task, "name", None)
    fields["task_id"] = task_id
    if getattr(task, "name", "") == "cairn.ingest.process" and args:
        fields["job_id"] = args[0]
    context = log_context.bound(**fields)
    context.__enter__()
    if task_id:
        _active[task_id] = context


def _task_postrun(task_id: str | None = None, **kwargs: Any) -> None:
    context = _active.pop(task_id or "", None)
    if context is not None:
        try:
            context.__exit__(None, None, None)
        except ValueError:  # reset from another context (a thread pool's worker thread): nothing to undo
            pass


def connect_celery_signals() -> None:
    from celery import signals

    signals.before_task_publish.connect(_before_publish, weak=False)
    signals.task_prerun.connect(_task_prerun, weak=False)
    signals.task_postrun.connect(_task_postrun, weak=False)
