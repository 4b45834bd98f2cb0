"""A request body is refused before it is read (issue 11, item 10): no credentials, too large, too large so far.

Drives the ASGI application uvicorn serves (``config.asgi.application``)
with a scripted client, so the test sees how much of the body was pulled.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from django.conf import settings

from config.asgi import CairnASGIHandler, application

GIB = 1 << 30
MIB = 1 << 20


class Client:
    """One ASGI request: its body offered chunk by chunk; what came back and how much was read."""

    def __init__(self, method: str, path: str, *, chunks: Sequence[bytes] = (), headers: dict[str, str] | None = None,
                 peer: str = "203.0.113.5") -> None:
        self.scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                      "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                      "server": ("127.0.0.1", 8000), "client": (peer, 50000),
                      "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
                      + [(b"host", b"127.0.0.1")]}
        self.chunks = list(chunks)
        self.pulled = 0
        self.sent: list[dict] = []
        self.pulled_before_answer: int | None = None  # chunks read when the answer's body went out

    async def _receive(self) -> dict:
        if self.pulled < len(self.chunks):
            self.pulled += 1
            return {"type": "http.request", "body": self.chunks[self.pulled - 1],
                    "more_body": self.pulled < len(self.chunks)}
        await asyncio.sleep(3600)  # a client that has sent everything waits for the answer
        return {"type": "http.disconnect"}

    async def _send(self, message: dict) -> None:
        if message["type"] == "http.response.body" and self.pulled_before_answer is None:
            self.pulled_before_answer = self.pulled
        self.sent.append(message)

    def run(self) -> Client:
        async def go() -> None:
            await asyncio.wait_for(application(self.scope, self._receive, self._send), timeout=60)
        asyncio.run(go())
        return self

    @property
    def status(self) -> int:
        return next(m["status"] for m in self.sent if m["type"] == "http.response.start")

    @property
    def body(self) -> dict:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"))


UPLOAD = "/api/v1/collections/1/documents"


def test_a_huge_unauthenticated_body_is_refused_before_a_byte_is_read():
    client = Client("POST", UPLOAD, chunks=[b"x" * MIB] * 3, headers={"content-length": str(GIB + GIB // 2)}).run()
    assert client.status == 401 and client.pulled_before_answer == 0
    assert "credentials" in client.body["error"]["message"]
    # Then the rest is read and thrown away (kept nowhere), so the client can finish sending and read the
    # answer instead of a broken pipe; the response ends once the body has.
    assert client.pulled == 3 and client.sent[-1] == {"type": "http.response.body", "body": b""}


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    headers = {"authorization": "Bearer cairn_deadbeef_x", "content-length": str(settings.CAIRN_MAX_UPLOAD_BYTES + 2 * MIB)}
    client = Client("POST", UPLOAD, chunks=[b"x" * MIB], headers=headers).run()
    assert client.status == 413 and client.pulled_before_answer == 0
    small = Client("POST", "/api/v1/ask", chunks=[b"{}"], headers={"authorization": "Bearer x",
                                                                  "content-length": str(6 * MIB)}).run()
    assert small.status == 413 and small.pulled_before_answer == 0  # not an upload: the small limit


def test_what_is_discarded_after_a_refusal_is_bounded(monkeypatch):
    import config.asgi

    headers = {"authorization": "Bearer x", "content-length": str(GIB)}
    client = Client("POST", UPLOAD, chunks=[b"x" * MIB] * 200, headers=headers).run()
    assert client.status == 413 and client.pulled == 65  # DRAIN_BYTES (64 MB), then the connection closes
    monkeypatch.setattr(config.asgi, "DRAIN_SECONDS", 0.2)
    slow = Client("POST", UPLOAD, chunks=[b"x" * MIB], headers=headers)
    slow.chunks = []  # a client that stops sending: the wait ends after DRAIN_SECONDS
    assert slow.run().status == 413 and slow.sent[-1]["body"] == b""


def test_a_body_without_a_length_is_cut_off_as_soon_as_it_passes_the_limit():
    chunks = [b"x" * MIB] * 200  # 200 MB, announced nowhere
    client = Client("POST", "/api/v1/ask", chunks=chunks, headers={"authorization": "Bearer x"}).run()
    assert client.status == 413 and client.pulled_before_answer <= 7 and "limit" in client.body["error"]["message"]
    assert client.pulled <= 7 + 65  # then at most DRAIN_BYTES more, discarded


def test_forwarding_headers_from_an_untrusted_loopback_peer_are_no_credentials(settings):
    settings.CAIRN_MODE = "personal"
    relayed = Client("POST", UPLOAD, chunks=[b"x"], headers={"x-forwarded-for": "198.51.100.7",
                                                              "content-length": "1"}, peer="127.0.0.1").run()
    assert relayed.status == 401 and relayed.pulled_before_answer == 0


@pytest.mark.django_db(transaction=True)
def test_a_local_personal_client_and_the_sign_in_form_are_let_through(isolated_storage):
    body = b'{"name": "Handbook"}'
    created = Client("POST", "/api/v1/collections", chunks=[body], peer="127.0.0.1",
                     headers={"content-type": "application/json", "content-length": str(len(body))}).run()
    assert created.status == 201 and created.pulled == 1
    login = Client("POST", "/login/", chunks=[b"username=a&password=b"],
                   headers={"content-type": "application/x-www-form-urlencoded", "content-length": "21"}).run()
    assert login.pulled == 1 and login.status != 401  # Django answers (its CSRF check), not the guard


def test_bodies_are_spooled_under_the_data_directory_not_the_systems_temp_dir():
    chunks = [b"x" * MIB] * 4  # past FILE_UPLOAD_MAX_MEMORY_SIZE: rolls over to a file
    messages = iter([{"type": "http.request", "body": c, "more_body": i < 3} for i, c in enumerate(chunks)])

    async def receive() -> dict:
        return next(messages)

    body_file = asyncio.run(CairnASGIHandler().read_body(receive))
    try:
        # An anonymous temporary file: where it lives shows through /proc (".../tmp/#123 (deleted)").
        where = Path(os.readlink(f"/proc/self/fd/{body_file.fileno()}").split(" (deleted)")[0])
        assert where.parent == Path(settings.FILE_UPLOAD_TEMP_DIR)
        assert str(settings.FILE_UPLOAD_TEMP_DIR).startswith(str(settings.DATA_DIR))
        assert body_file.read() == b"x" * 4 * MIB
    finally:
        body_file.close()
