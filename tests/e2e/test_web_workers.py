"""``cairn_web --workers N``: N processes, one SO_REUSEPORT socket each, a dead one replaced, all stopped on SIGTERM."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

from tests.e2e.processes import Process, child_env, free_port, manage, run_manage


def workers_of(pid: int) -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children |= {int(c) for c in (task / "children").read_text().split()}
    return {c for c in children if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()}


def listening_sockets(port: int) -> int:
    """How many sockets listen on ``port`` (each worker's own, in one SO_REUSEPORT group)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A")


def gone(pid: int) -> bool:
    try:
        return b"zombie" in Path(f"/proc/{pid}/status").read_bytes()
    except FileNotFoundError:
        return True


def health(base: str) -> int:
    try:
        with urllib.request.urlopen(f"{base}/api/v1/health", timeout=10) as response:
            return response.status
    except OSError:
        return -1


def test_workers_share_the_port_and_a_dead_one_is_replaced(tmp_path):
    env = child_env(CAIRN_DATA_DIR=str(tmp_path / "data"))
    run_manage(env, "migrate", "--verbosity", "0")
    port = free_port()
    web = Process("web", manage("cairn_web", "--port", str(port), "--workers", "2"), env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while listening_sockets(port) < 2 or health(base) != 200:
            assert web.alive() and time.monotonic() < deadline, web.log()
            time.sleep(0.5)
        first = workers_of(web.popen.pid)
        assert len(first) == 2, first
        assert all(health(base) == 200 for _ in range(20))  # a new connection each: either worker answers

        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while gone(victim) is False:  # its socket closes with it
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # the kernel drops the closed socket from the port's group (a SYN in between is reset)
        statuses = [health(base) for _ in range(10)]
        assert statuses == [200] * 10, (statuses, listening_sockets(port))  # the other worker serves meanwhile
        deadline = time.monotonic() + 120
        while not (len(workers_of(web.popen.pid)) == 2 and victim not in workers_of(web.popen.pid)
                   and listening_sockets(port) == 2):
            assert web.alive() and time.monotonic() < deadline, web.log()
            time.sleep(0.5)
        assert all(health(base) == 200 for _ in range(20))

        workers = workers_of(web.popen.pid)
        web.popen.send_signal(signal.SIGTERM)
        web.popen.wait(timeout=60)
        assert all(gone(pid) for pid in workers)
    finally:
        web.stop()
