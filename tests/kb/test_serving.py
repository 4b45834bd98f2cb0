"""The team web process's listening sockets (kb/serving.py), as Uvicorn serves on them."""

from __future__ import annotations

import asyncio
import http.client
import socket
import time

from kb import serving


def test_connections_accepted_on_a_worker_socket_send_without_nagle_delay() -> None:
    """Uvicorn serves a worker's socket with ``loop.create_server(sock=…)``; asyncio sets ``TCP_NODELAY`` on
    what it accepts only when the socket says it is TCP.  Without it a kept-alive connection's response
    body waited for the client's delayed ACK (40 ms a request)."""
    listener = serving.reuse_port_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    seen: list[int] = []

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            self.transport = transport

        def data_received(self, data: bytes) -> None:  # a keep-alive HTTP server writing head and body apart
            if b"\r\n\r\n" in data:
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")  # type: ignore[attr-defined]
                self.transport.write(b"ok")  # type: ignore[attr-defined]

    async def serve_and_ask() -> list[float]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Protocol, sock=listener)

        def ask() -> list[float]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            times = []
            for _ in range(6):
                started = time.perf_counter()
                connection.request("GET", "/")
                assert connection.getresponse().read() == b"ok"
                times.append(time.perf_counter() - started)
            connection.close()
            return times

        try:
            return await asyncio.to_thread(ask)
        finally:
            server.close()
            await server.wait_closed()

    times = asyncio.run(serve_and_ask())
    assert seen == [1], times  # (with 0, each kept-alive request after the first took 40 ms or more)
