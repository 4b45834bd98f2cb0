"""Parsing a document within a time and memory budget, in both shapes.

PDF and DOCX files — and any file over ``IN_PROCESS_MAX_BYTES`` — are parsed
by the parse server (``ingestion.parse_server``): one small process per
worker, started on first use, that forks a child per document from a clean
state (no threads, no Django, no model; a few milliseconds per document).
The child may use ``CAIRN_PARSE_MAX_MB`` of memory and
``CAIRN_PARSE_TIMEOUT`` seconds; past either it is stopped and the job ends
FAILED with a reason that names the budget and its setting.  A parser that
crashes on hostile input takes only its child with it; the worker never
runs out of memory or hangs.  Small text-like files parse in the worker:
their parsers are linear and cannot blow up.

Plain ``subprocess`` and ``os.fork`` rather than ``multiprocessing``: Celery's
prefork workers count as daemonic processes there, which may not start
children, and ``multiprocessing`` would refuse them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from django.conf import settings

from ingestion.parse_server import read_frame, write_frame
from ingestion.parsers import KIND_DOCX, KIND_PDF, ParsedDocument, ParseError, detect
from ingestion.parsers import parse as parse_here

log = logging.getLogger(__name__)

IN_PROCESS_MAX_BYTES = 256 * 1024
_ISOLATED_KINDS = (KIND_PDF, KIND_DOCX)
_PROJECT = str(Path(__file__).resolve().parents[1])


class _ParseServer:
    """This process's parse server: started on first use, again after it was lost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._owner = 0

    def _started(self) -> subprocess.Popen[bytes]:
        process = self._process
        if process is None or process.poll() is not None or self._owner != os.getpid():
            path = os.pathsep.join(p for p in (_PROJECT, os.environ.get("PYTHONPATH", "")) if p)
            process = subprocess.Popen(  # noqa: S603 - our own module, by this interpreter
                [sys.executable, "-m", "ingestion.parse_server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": path}, close_fds=True,
            )
            self._process, self._owner = process, os.getpid()
        return process

    def ask(self, data: bytes, kind: str, memory_mb: int, seconds: float) -> tuple[str, Any]:
        with self._lock:
            process = self._started()
            assert process.stdin is not None and process.stdout is not None  # both are pipes
            try:
                write_frame(process.stdin, (data, kind, memory_mb, seconds))
                answer: tuple[str, Any] = read_frame(process.stdout)
                return answer
            except (EOFError, BrokenPipeError, OSError):
                process.kill()
                self._process = None
                return ("crashed", "the parse server stopped")


_server = _ParseServer()


def parse(data: bytes, kind: str | None = None) -> ParsedDocument:
    """``ingestion.parsers.parse`` within the budgets; raises ``ParseError`` naming a budget it exceeded."""
    if kind is None:
        kind = detect(data).kind
    if kind not in _ISOLATED_KINDS and len(data) <= IN_PROCESS_MAX_BYTES:
        return parse_here(data, kind)
    seconds, memory_mb = settings.CAIRN_PARSE_TIMEOUT, settings.CAIRN_PARSE_MAX_MB
    outcome, value = _server.ask(data, kind, memory_mb, seconds)
    if outcome == "ok":
        if not isinstance(value, ParsedDocument):
            raise ParseError("The file could not be read (the parser answered something else).")
        return value
    if outcome == "timeout":
        raise ParseError(f"Reading the file took longer than its {seconds:g}-second budget "
                         "(CAIRN_PARSE_TIMEOUT); it was stopped.", reason="time_budget")
    if outcome == "memory":
        raise ParseError(f"Reading the file needed more than its {memory_mb} MB memory budget (CAIRN_PARSE_MAX_MB).",
                         reason="memory_budget")
    if outcome == "crashed":
        raise ParseError(f"The file could not be read: the parser stopped ({value}).")
    raise ParseError(str(value))
