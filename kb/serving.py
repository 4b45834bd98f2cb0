"""Uvicorn workers that share a port through ``SO_REUSEPORT``, so the kernel spreads connections evenly.

Uvicorn's own ``--workers`` shares one listening socket: whichever worker
accepts first keeps the connection for as long as it stays open.  Clients
that keep their connections (API clients, a proxy's upstream pool) then pile
onto one worker: under the load benchmark one worker used 0.73 cores and the
other 0.30, and the busy one's requests queued for the GIL.  Here each
worker listens on a socket of its own in one ``SO_REUSEPORT`` group, and the
kernel hashes every new connection to one of them.

The supervisor restarts a worker that dies (after a pause, if it dies
within seconds of starting), stops every worker on SIGINT/SIGTERM, and gives
up when a worker fails before it could serve (a port in use, an app that
does not load), as Uvicorn does.

``limit_query_threads`` sizes the native thread pools (torch, OpenMP,
OpenBLAS) of a team web process before they load.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import socket
import sys
import time
from typing import Any

logger = logging.getLogger("uvicorn.error")

STARTUP_FAILURE = 3  # a worker's exit status when it could not start serving (as uvicorn.config)
_QUICK_DEATH_S = 10.0


def limit_query_threads() -> None:
    """Give a team web process ``CAIRN_QUERY_THREADS`` native threads per request (default 1).

    It embeds only queries, one short forward pass each, and searches FAISS
    with one query vector, while many requests run at once: the cores are
    already shared between requests, and a second thread per request only
    spins waiting for work.  Measured on SciFact, one search cost 41 ms of
    CPU with 2 torch threads and 17 ms with 1, and was no faster.

    OpenMP (torch's and FAISS's own copies of libgomp) and OpenBLAS read
    ``OMP_NUM_THREADS`` once, when they load, and a thread pool's size is
    then given to every new thread — each request runs in a new one — so
    this must run before anything imports torch or FAISS.  ``cairn_web``
    calls it before Django's system checks, which import the URLs and with
    them FAISS: a single-worker ``cairn_web`` (served in that process)
    otherwise searched with two OpenMP threads per request and spent 29 ms
    of CPU per search instead of 15.  ``config/asgi.py`` calls it again for
    other ASGI servers.  A personal-mode process (it also embeds documents)
    keeps every core.
    """
    from django.conf import settings

    if settings.CAIRN_TASKS != "celery":
        return
    threads = str(settings.CAIRN_QUERY_THREADS)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(settings.CAIRN_QUERY_THREADS)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket in the port's ``SO_REUSEPORT`` group.

    Made with its protocol named (``IPPROTO_TCP``), as ``getaddrinfo`` would
    give it: the connections it accepts inherit that, and asyncio turns
    Nagle's algorithm off (``TCP_NODELAY``) only on sockets that say they are
    TCP.  Made with protocol 0, every response on a kept-alive connection
    (API clients, a proxy's upstream pool) waited for the client's delayed
    ACK before its body left (Uvicorn writes the head and the body
    separately): 40 ms more per request, a health check's 3 ms became 44.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _worker(options: dict[str, Any]) -> None:  # runs in the child
    import uvicorn

    try:
        sock = reuse_port_socket(options["host"], options["port"])
    except OSError as exc:
        print(f"cairn_web: cannot listen on {options['host']}:{options['port']}: {exc}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    config = uvicorn.Config(options["app"], host=options["host"], port=options["port"], **options["uvicorn"])
    uvicorn.Server(config).run(sockets=[sock])


def serve(app: str, *, host: str, port: int, workers: int, **uvicorn_options: Any) -> None:
    """Run ``workers`` Uvicorn processes serving ``app`` on ``host:port``; returns when they are stopped."""
    context = multiprocessing.get_context("spawn")
    options = {"app": app, "host": host, "port": port, "uvicorn": uvicorn_options}
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start() -> tuple[multiprocessing.process.BaseProcess, float]:
        process = context.Process(target=_worker, args=(options,), name="cairn-web-worker")
        process.start()
        return process, time.monotonic()

    children = [start() for _ in range(workers)]
    try:
        while not stopping:
            time.sleep(0.2)
            for i, (process, started) in enumerate(children):
                if process.is_alive() or stopping:
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    logger.error("a web worker could not start serving; stopping")
                    stopping = True
                    break
                logger.error("web worker %s exited with status %s; starting another", process.pid, process.exitcode)
                if time.monotonic() - started < _QUICK_DEATH_S:
                    time.sleep(1)  # do not spin on a worker that dies at once
                children[i] = start()
    finally:
        for process, _ in children:
            if process.is_alive():
                process.terminate()  # SIGTERM: Uvicorn finishes the requests in flight
        deadline = time.monotonic() + 30
        for process, _ in children:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if any(process.exitcode == STARTUP_FAILURE for process, _ in children):
        sys.exit(STARTUP_FAILURE)
