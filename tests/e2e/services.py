"""PostgreSQL and Redis servers of a test's own, on free ports, for tests that restart or break them.

The machine's shared servers (127.0.0.1:5432, :6379) are never stopped by a
test; fault tests start these instead.  PostgreSQL refuses to run as root,
so as root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e.processes import Process, free_port


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found


class Postgres:
    """A throwaway PostgreSQL cluster: trust authentication, no fsync, one database ``cairn``."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cairn-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            postgres = pwd.getpwnam("postgres")
            os.chown(self.root, postgres.pw_uid, postgres.pw_gid)
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()
        self._run(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "cairn")

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stdout}{done.stderr}")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/cairn"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -F -c max_connections=100"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    """A throwaway Redis without persistence: a restart empties it, as a crash of such a server would."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.process: Process | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.process = Process(f"redis-{self.port}", ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                                      "--save", "", "--appendonly", "no"], os.environ, self.log_dir)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"redis on port {self.port} did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def close(self) -> None:
        self.kill()
