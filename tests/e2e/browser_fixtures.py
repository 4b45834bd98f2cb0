"""Fixtures for the browser test: a real Cairn server process and a headless Chromium.

Kept out of ``conftest.py`` (which the end-to-end suite shares) and imported
by the test modules that need them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SERVER_START_TIMEOUT = 60.0


@dataclass(frozen=True)
class CairnServer:
    url: str
    data_dir: Path
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v1/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server we started (its own process group: uvicorn and the in-process worker)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def cairn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CairnServer]:
    """``manage.py cairn_serve`` on a free port with a fresh data directory.

    The test session runs with ``CAIRN_TASKS=inline`` and its own data dir;
    the child gets neither, so it runs the real background worker, as a
    personal install does.
    """
    data_dir = tmp_path_factory.mktemp("cairn-e2e-data")
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    port = _free_port()
    env = dict(os.environ)
    env.pop("CAIRN_TASKS", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update({
        "CAIRN_DATA_DIR": str(data_dir),
        "CAIRN_MODE": "personal",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    })
    server = CairnServer(url=f"http://127.0.0.1:{port}", data_dir=data_dir, log_path=log_path)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "cairn_serve", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not _healthy(server.url):
            if process.poll() is not None:
                pytest.fail(f"cairn_serve exited with {process.returncode} before answering:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"cairn_serve did not answer /api/v1/health within {SERVER_START_TIMEOUT:.0f} s:\n"
                            f"{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        _stop(process)


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A page in headless Debian Chromium; uncaught script errors and CSP violations collect in ``page.script_errors``."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    script_errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=False)
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.on("pageerror", lambda error: script_errors.append(str(error)))
            # Anything the Content-Security-Policy blocks is reported on the console: count it as an error.
            page.on("console", lambda message: script_errors.append(message.text)
                    if "Content Security Policy" in message.text else None)
            page.script_errors = script_errors  # type: ignore[attr-defined]
            yield page
        finally:
            browser.close()
