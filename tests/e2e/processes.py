"""Starting and stopping real Cairn processes (servers, Celery workers) for end-to-end tests."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# Variables of the test session that must not leak into child processes.
_SESSION_ONLY = ("CAIRN_TASKS", "CAIRN_DATA_DIR", "CAIRN_MODE", "DJANGO_SETTINGS_MODULE", "PYTEST_CURRENT_TEST")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SESSION_ONLY}
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    env.update(overrides)
    return env


def team_process_report(code: str, data_dir: Path, **overrides: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter with team-mode settings and no services, and return the JSON it
    printed on a line starting ``REPORT ``.

    PostgreSQL and Redis point at a closed port (settings load and start-up runs; nothing connects), and the
    session's ``CAIRN_*`` and native thread variables are left out, so the child sees only what it is given.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS") and not k.startswith("CAIRN_")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", CAIRN_DATA_DIR=str(data_dir),
               DATABASE_URL="postgres://cairn@127.0.0.1:9/unused", CAIRN_REDIS_URL="redis://127.0.0.1:9/0",
               CAIRN_SECRET_KEY=secrets.token_urlsafe(50), CAIRN_ALLOWED_HOSTS="localhost", HF_HUB_OFFLINE="1",
               **overrides)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-3000:]
    report: dict[str, Any] = json.loads(lines[-1].removeprefix("REPORT "))
    return report


class Process:
    """A child process whose output goes to a log file, killed with its process group."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        """``kill -9`` of the whole process group: no cleanup, no goodbye."""
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=10)
        self._log.close()


def manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def run_manage(env: Mapping[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run(manage(*args), cwd=ROOT, env=dict(env), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


class Http:
    """A tiny JSON client over urllib (no extra dependency), optionally with an API key."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, *, body: bytes | None = None,
                content_type: str | None = None, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.base + path, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                raw = response.read()
                status = response.status
                kind = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raw, status, kind = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        if "json" in kind:
            return status, json.loads(raw or b"null")
        return status, raw

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post_json(self, path: str, payload: Any) -> tuple[int, Any]:
        return self.request("POST", path, body=json.dumps(payload).encode(), content_type="application/json")

    def delete(self, path: str) -> tuple[int, Any]:
        return self.request("DELETE", path)

    def upload(self, path: str, filename: str, data: bytes) -> tuple[int, Any]:
        boundary = "----cairn" + os.urandom(8).hex()
        safe_name = filename.replace('"', "%22")
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{safe_name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode("utf-8", "surrogateescape") + data + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", path, body=body, content_type=f"multipart/form-data; boundary={boundary}")

    def wait_until_up(self, process: Process | None = None, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and not process.alive():
                raise AssertionError(f"{process.name} exited:\n{process.log()}")
            try:
                status, _ = self.get("/api/v1/health")
                if status == 200:
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"server did not come up:\n{process.log() if process else ''}")

    def wait_for_document(self, document_id: int, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        document: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, document = self.get(f"/api/v1/documents/{document_id}")
            assert status == 200, document
            if document["status"] in ("INDEXED", "FAILED"):
                return document
            time.sleep(0.3)
        raise AssertionError(f"document {document_id} stuck: {document}")
