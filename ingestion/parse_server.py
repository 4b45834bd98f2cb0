"""The parse server: a small process that forks one child per document to parse it within a budget.

Started by ``ingestion.parsing`` (one per worker process, on first use) as
``python -m ingestion.parse_server``; it loads the parsers once, then reads
requests from stdin and answers on stdout, one at a time.  Each request is
parsed in a child forked from this process — which has no threads, no
Django, no model — with an address-space limit and a CPU-time limit, so a
hostile file can exhaust neither the worker's memory nor its time, and a
parser that crashes takes only the child with it.  The server exits when
its worker goes away (stdin closes).

Frames: an 8-byte big-endian length, then a pickle.  Request:
``(data, kind, memory_mb, seconds)``; answer: ``(outcome, value)`` with
outcome ``ok`` (value: the ``ParsedDocument``), ``error`` (a message),
``memory``, ``timeout`` or ``crashed`` (how the child ended).
"""

from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import struct
import sys
import time
from typing import IO, Any

_LENGTH = struct.Struct(">Q")
PRELOAD = ("ingestion.parsers", "ingestion.parsers.pdf", "ingestion.parsers.docx", "ingestion.parsers.html",
           "ingestion.parsers.markdown", "ingestion.parsers.text", "pypdfium2", "docx", "charset_normalizer")


def write_frame(stream: IO[bytes], value: Any) -> None:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(payload)) + payload)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame's value; EOFError when the other side is gone."""
    header = _read_exactly(stream, _LENGTH.size)
    return pickle.loads(_read_exactly(stream, _LENGTH.unpack(header)[0]))


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    while size:
        part = stream.read(size)
        if not part:
            raise EOFError("the other side of the parse server closed its pipe")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _child(data: bytes, kind: str | None, memory_mb: int, seconds: float, out: int) -> None:
    """In the forked child: limit memory and CPU time, parse, write the answer, exit."""
    from ingestion.parsers import ParseError, parse

    limit = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cpu = int(seconds) + 2  # the parent stops it at ``seconds`` of wall time; this also ends it if the parent dies
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    try:
        answer: tuple[str, Any] = ("ok", parse(data, kind))
    except MemoryError:
        answer = ("memory", "")
    except ParseError as exc:
        answer = ("error", str(exc))
    except BaseException as exc:  # the worker turns whatever else into a readable FAILED reason
        answer = ("error", f"The file could not be read ({type(exc).__name__}).")
    try:
        payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        payload = pickle.dumps(("memory", ""))
    with os.fdopen(out, "wb") as pipe:
        pipe.write(payload)


def parse_one(data: bytes, kind: str | None, memory_mb: int, seconds: float) -> tuple[str, Any]:
    """Fork a child to parse ``data``; wait up to ``seconds`` for its answer."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        try:
            _child(data, kind, memory_mb, seconds, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + seconds
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_end], [], [], left)
            if not ready:
                continue
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if timed_out:
        return ("timeout", "")
    if not chunks:
        how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit code {os.WEXITSTATUS(status)}"
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
            return ("timeout", "")
        return ("crashed", how)
    return pickle.loads(b"".join(chunks))  # our own child's answer


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    for module in PRELOAD:
        __import__(module)
    while True:
        try:
            data, kind, memory_mb, seconds = read_frame(requests)
        except EOFError:
            return
        write_frame(answers, parse_one(data, kind, memory_mb, seconds))


if __name__ == "__main__":
    answers = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print from a library must not corrupt the answers
    serve(sys.stdin.buffer, answers)
