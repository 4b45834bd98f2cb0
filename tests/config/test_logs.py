"""The log formatters: one JSON object per line with the bound ids, and secrets redacted in both formats."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from access import log_context
from config.logs import JsonFormatter, TextFormatter, redact

SECRETS = [
    ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig", "eyJhbGciOiJSUzI1NiJ9"),
    ("key cairn_ab12cd34_" + "Q" * 43, "Q" * 43),
    ("connecting to postgresql://cairn:s3cr3t-pw@db:5432/cairn", "s3cr3t-pw"),
    ('{"password": "hunter2hunter2", "user": "alice"}', "hunter2hunter2"),
    ("POST /login password=correct-horse&next=/", "correct-horse"),
    ("client_secret=abcdef0123456789 api_key: k-998877", "abcdef0123456789"),
    ("api_key: k-998877", "k-998877"),
]


@pytest.mark.parametrize(("text", "secret"), SECRETS)
def test_redact_removes_each_kind_of_secret(text, secret):
    assert secret not in redact(text)


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("token=abc123secret")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("cairn.test", logging.ERROR, __file__, 1, message, args, exc_info)


def test_json_line_has_the_fields_and_the_bound_ids():
    with log_context.bound(request_id="req-12345678", task="cairn.ingest.process", job_id=7):
        line = JsonFormatter().format(_record("job %s done with password=%s", 7, "pw-secret-1", exc=True))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "ERROR" and entry["logger"] == "cairn.test" and entry["time"].endswith("+00:00")
    assert entry["request_id"] == "req-12345678" and entry["job_id"] == "7" and entry["task"] == "cairn.ingest.process"
    assert "pw-secret-1" not in line and "abc123secret" not in line and "RuntimeError" in entry["exception"]


def test_ids_are_unbound_after_the_block():
    with log_context.bound(request_id="req-12345678"):
        pass
    assert "request_id" not in json.loads(JsonFormatter().format(_record("x")))


def test_text_line_is_readable_and_redacted():
    with log_context.bound(request_id="req-12345678"):
        line = TextFormatter().format(_record("Bearer abcdefghijkl sent"))
    assert "[request_id=req-12345678]" in line and "abcdefghijkl" not in line and "cairn.test" in line
