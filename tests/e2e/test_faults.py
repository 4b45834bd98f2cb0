"""Faults in the team shape, with real processes (issue 11): killed workers, a Redis and a PostgreSQL that
restart, a full disk.  Each ends with every document INDEXED exactly once, the index matching the database,
and the service resuming by itself.

The stack is the test's own: PostgreSQL and Redis servers on free ports
(``tests/e2e/services.py``), the data directory on a small tmpfs, Celery
workers per queue, beat (the reaper every second, a job silent for 4 seconds
counts as lost), the web process, and a tiny generation model.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.processes import Http, Process, child_env, free_port, manage, run_manage
from tests.e2e.services import Postgres, Redis

pytestmark = [pytest.mark.team, pytest.mark.slow, pytest.mark.faults]

TMPFS_MB = 96


def _mount_tmpfs(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m,mode=0777", "tmpfs", str(path)],
                          capture_output=True, text=True)
    return done.returncode == 0


def text_document(i: int, paragraphs: int = 24) -> bytes:
    lines = [f"# Maintenance manual {i}", f"Manual {i} names the access code heron-{i} for the pump room."]
    lines += [f"Paragraph {j} of manual {i}: inspect the valves, the gauges and the seals of pump {j}, and log "
              f"the pressure readings of shift {j} before the handover at the end of the day." for j in range(paragraphs)]
    return "\n\n".join(lines).encode()


class Stack:
    """The team shape's processes on the test's own PostgreSQL, Redis and data directory."""

    POOLS = {
        "ingest": ["-Q", "ingest", "-c", "1", "-n", "ingest@%h"],
        "index": ["-Q", "index", "-c", "1", "-n", "index@%h"],
        "inference": ["-Q", "inference", "-c", "2", "-P", "threads", "-n", "inference@%h"],
    }

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.processes: dict[str, Process] = {}
        self.starts = 0

    def start(self, name: str) -> Process:
        self.starts += 1
        if name == "web":
            argv = manage("cairn_web", "--host", "127.0.0.1", "--port", self.env["TEST_PORT"], "--workers", "1")
        elif name == "beat":
            argv = [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "WARNING",
                    "-s", str(self.root / f"beat-{self.starts}")]
        else:
            argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "--prefetch-multiplier", "1",
                    "--without-gossip", "--without-mingle", "--loglevel", "INFO", *self.POOLS[name]]
        process = Process(f"{name}-{self.starts}", argv, self.env, self.root)
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def restart(self, name: str) -> Process:
        self.kill(name)
        return self.start(name)

    def logs(self) -> str:
        return "\n".join(f"== {name}\n{process.log()}" for name, process in self.processes.items())

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[tuple[Stack, Http, Postgres, Redis, Path]]:
    from tests.inference.tiny_models import build_tiny_qwen2

    root = tmp_path_factory.mktemp("faults")
    data = root / "data"
    if not _mount_tmpfs(data):
        pytest.fail("the fault tests need to mount a tmpfs for the data directory (run as root, as CI does)")
    postgres, redis_server = Postgres(), Redis(root)
    model = build_tiny_qwen2(root / "tiny-qwen2", endless=True)  # a stream still running when its worker dies
    port = free_port()
    env = child_env(
        DATABASE_URL=postgres.url, CAIRN_REDIS_URL=redis_server.url, CAIRN_DATA_DIR=str(data),
        CAIRN_SECRET_KEY=secrets.token_urlsafe(50), CAIRN_ALLOWED_HOSTS="127.0.0.1,localhost",
        CAIRN_SECURE_COOKIES="0", CAIRN_JOB_STUCK_SECONDS="4", CAIRN_REAPER_INTERVAL="1",
        CAIRN_JOB_MAX_ATTEMPTS="40", CAIRN_LLM_BACKEND="transformers", CAIRN_LLM_PATH=model,
        CAIRN_MAX_NEW_TOKENS="1500", TEST_PORT=str(port), OMP_NUM_THREADS="1",
    )
    stack = Stack(root, env)
    try:
        run_manage(env, "migrate", "--verbosity", "0")
        token = run_manage(env, "cairn_apikey", "--user", "alice", "--create-user").strip()
        for name in ("ingest", "index", "inference", "beat", "web"):
            stack.start(name)
        http = Http(f"http://127.0.0.1:{port}", token=token)
        http.wait_until_up(stack.processes["web"])
        yield stack, http, postgres, redis_server, data
    finally:
        stack.stop()
        redis_server.close()
        postgres.close()
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def db(postgres: Postgres) -> psycopg.Connection[Any]:
    return psycopg.connect(postgres.url, autocommit=True, connect_timeout=5)


def upload_all(http: Http, collection: int, files: list[tuple[str, bytes]]) -> list[int]:
    ids = []
    for name, data in files:
        status, body = http.upload(f"/api/v1/collections/{collection}/documents", name, data)
        assert status == 201, body
        ids.append(body["id"])
    return ids


def wait_indexed(http: Http, stack: Stack, ids: list[int], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        try:
            pending = [d for d in pending if http.get(f"/api/v1/documents/{d}")[1].get("status") != "INDEXED"]
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    assert not pending, f"not INDEXED: {pending}\n{stack.logs()}"


def assert_consistent(postgres: Postgres, data: Path) -> None:
    """Every live document INDEXED once; no duplicate chunk; the index holds exactly the current chunks."""
    from kb.retrieval.index_store import IndexStore

    with db(postgres) as conn:
        jobs = conn.execute("SELECT j.status, count(*) FROM ingestion_ingestionjob j JOIN kb_documentversion v ON "
                            "v.id = j.version_id JOIN kb_document d ON d.id = v.document_id WHERE d.deleted_at IS NULL "
                            "GROUP BY j.status").fetchall()
        assert dict(jobs).keys() <= {"INDEXED"}, jobs
        total, distinct = conn.execute("SELECT count(*), count(DISTINCT (version_id, ordinal)) FROM kb_chunk").fetchone()
        assert total == distinct, "duplicate chunks"
        current = {row[0] for row in conn.execute(
            "SELECT c.id FROM kb_chunk c JOIN kb_document d ON d.current_version_id = c.version_id "
            "WHERE d.deleted_at IS NULL")}
        titles = conn.execute("SELECT count(*), count(DISTINCT title) FROM kb_document WHERE deleted_at IS NULL").fetchone()
        assert titles[0] == titles[1], "a document was created twice"
    index_dir = data / "index"
    models = [p for p in index_dir.iterdir() if p.is_dir()]
    active = __import__("json").loads((index_dir / "ACTIVE_MODEL").read_text())["model_id"]
    store = IndexStore(index_dir, active)
    snapshot = store.load()
    assert snapshot is not None and models
    dense_ids = set(snapshot.dense.ids().tolist())
    lexical_ids = set(snapshot.lexical.ids().tolist())
    assert dense_ids == lexical_ids == current, (len(dense_ids), len(lexical_ids), len(current))


@pytest.fixture(scope="module")
def collection(stack) -> int:
    _, http, *_ = stack
    status, body = http.post_json("/api/v1/collections", {"name": "Manuals"})
    assert status == 201, body
    return int(body["id"])


def test_an_ingest_worker_killed_mid_document_ten_times_loses_nothing(stack, collection):
    stack_, http, postgres, _, data = stack
    ids = upload_all(http, collection, [(f"manual-{i}.md", text_document(i)) for i in range(8)])
    kills = 0
    killed: set[tuple[int, int]] = set()  # (job, attempt) claims already killed
    deadline = time.monotonic() + 240
    while kills < 10 and time.monotonic() < deadline:
        with db(postgres) as conn:
            claims = set(conn.execute("SELECT id, attempts FROM ingestion_ingestionjob WHERE status IN "
                                      "('PARSING', 'CHUNKING', 'EMBEDDING') AND NOT ready_to_index").fetchall())
        if claims - killed:  # a live worker is in the middle of a document (a claim made since the last kill)
            stack_.restart("ingest")  # kill -9, then a fresh worker
            killed |= claims
            kills += 1
        time.sleep(0.2)
    assert kills == 10, f"only {kills} kills landed mid-document\n{stack_.logs()}"
    wait_indexed(http, stack_, ids)
    assert_consistent(postgres, data)
    status, found = http.get(f"/api/v1/search?q=heron-5%20access%20code&collection={collection}&k=3")
    assert status == 200 and found["results"][0]["document_id"] == ids[5]


def test_the_index_writer_killed_mid_write_keeps_readers_on_the_previous_version(stack, collection):
    stack_, http, postgres, _, data = stack
    failures: list[Any] = []
    stop = threading.Event()

    def search_throughout() -> None:
        while not stop.is_set():
            status, body = http.get(f"/api/v1/search?q=pump%20valves&collection={collection}&k=5")
            if status != 200 or not body["results"]:
                failures.append((status, body))
            time.sleep(0.05)

    reader = threading.Thread(target=search_throughout)
    reader.start()
    try:
        ids = upload_all(http, collection, [(f"log-{i}.md", text_document(100 + i, 40)) for i in range(6)])
        for _ in range(6):
            time.sleep(0.8)
            stack_.restart("index")
        wait_indexed(http, stack_, ids)
    finally:
        stop.set()
        reader.join()
    assert failures == [], failures[:3]
    assert_consistent(postgres, data)
    assert not list((data / "index").rglob("CURRENT.tmp"))  # no half-swapped pointer left for readers


def sse(port: str, token: str, payload: dict, on_token: Any, timeout: float) -> tuple[list[str], float]:
    """POST a streaming ask; call ``on_token`` at the first token; return the event names and the seconds taken."""
    import http.client
    import json

    connection = http.client.HTTPConnection("127.0.0.1", int(port), timeout=timeout)
    connection.request("POST", "/api/v1/ask", body=json.dumps(payload),
                       headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    assert response.status == 200, response.read()
    names: list[str] = []
    started = time.monotonic()
    fired = False
    for raw in response:
        line = raw.decode().strip()
        if line.startswith("event: "):
            names.append(line[7:])
            if names[-1] == "token" and not fired:
                fired = True
                on_token()
            if names[-1] in ("done", "error"):
                break
    connection.close()
    return names, time.monotonic() - started


def test_a_client_whose_inference_worker_is_killed_mid_stream_gets_an_error_soon(stack, collection):
    stack_, http, *_ = stack
    # A question the manuals answer (an unrelated one gets "no good match" without any generation).
    question = {"question": "Which pressure readings are logged before the handover?", "stream": True,
                "max_new_tokens": 1500,
                "collection": collection}
    names, seconds = sse(stack_.env["TEST_PORT"], http.token or "", question, lambda: stack_.kill("inference"), 60)
    assert "token" in names and names[-1] == "error", names
    assert seconds < 30  # not CAIRN_ASK_TIMEOUT (300 s): the worker's heartbeat stopped
    stack_.start("inference")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = http.post_json("/api/v1/ask", {"question": "Which access code does manual 5 name?",
                                                      "collection": collection, "max_new_tokens": 8})
        if status == 200:
            break
        assert status == 503, body  # "no inference worker is running" until the new one has loaded its model
        time.sleep(1)
    assert status == 200, (status, body, stack_.logs())


def test_redis_restarted_empty_while_jobs_are_queued_loses_no_document(stack, collection):
    stack_, http, postgres, redis_server, data = stack
    stack_.kill("ingest")  # the jobs wait in Redis …
    ids = upload_all(http, collection, [(f"queued-{i}.md", text_document(200 + i, 6)) for i in range(4)])
    redis_server.kill()  # … which loses them: no persistence
    status, body = http.post_json("/api/v1/ask", {"question": "Which access code does manual 5 name?",
                                                  "collection": collection})
    assert status == 503, body  # the queue is away: a clear 503, not a 500
    late = upload_all(http, collection, [("while-away.md", text_document(300, 4))])  # stored; queued later
    redis_server.start()
    stack_.start("ingest")
    wait_indexed(http, stack_, ids + late)
    assert_consistent(postgres, data)


def test_postgresql_restarted_under_load_gives_503s_then_resumes(stack, collection):
    stack_, http, postgres, _, data = stack
    statuses: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            try:
                status, _ = http.get(f"/api/v1/search?q=pressure%20readings&collection={collection}&k=3")
            except OSError:
                status = -1
            statuses.append(status)
            time.sleep(0.1)

    ids = upload_all(http, collection, [(f"during-{i}.md", text_document(400 + i, 10)) for i in range(3)])
    client = threading.Thread(target=keep_asking)
    client.start()
    try:
        time.sleep(1)
        postgres.stop()
        time.sleep(6)  # longer than CAIRN_DB_POOL_TIMEOUT (3 s): requests in the gap must get their 503
        postgres.start()
        time.sleep(6)
    finally:
        stop.set()
        client.join()
    assert 503 in statuses and 500 not in statuses and -1 not in statuses, sorted(set(statuses))
    assert statuses[-1] == 200, statuses[-10:]  # service resumed by itself
    wait_indexed(http, stack_, ids)
    assert_consistent(postgres, data)


def test_a_full_disk_refuses_uploads_clearly_keeps_serving_and_recovers(stack, collection):
    stack_, http, postgres, _, data = stack
    stack_.kill("index")  # a document waits for the writer while the disk fills up
    [waiting] = upload_all(http, collection, [("before-full.md", text_document(500, 4))])
    deadline = time.monotonic() + 60
    while http.get(f"/api/v1/documents/{waiting}")[1]["detail"] != "Waiting for the index writer":
        assert time.monotonic() < deadline, stack_.logs()
        time.sleep(0.3)
    filler = data / "filler"
    with open(filler, "wb", buffering=0) as handle:  # fill the data directory's disk to the last block
        try:
            while True:
                handle.write(b"\0" * (1 << 20))
        except OSError:
            pass
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    stack_.start("index")
    status, body = http.upload(f"/api/v1/collections/{collection}/documents", "too-much.md", text_document(501, 40))
    assert status == 507 and "storage is full" in body["error"]["message"], (status, body)
    status, found = http.get(f"/api/v1/search?q=heron-5&collection={collection}&k=3")
    assert status == 200 and found["results"]  # the previous index version keeps serving
    time.sleep(3)
    assert http.get(f"/api/v1/documents/{waiting}")[1]["status"] != "INDEXED"  # the writer could not write
    os.remove(filler)
    wait_indexed(http, stack_, [waiting])  # the reaper starts the pass again: service resumes by itself
    later = upload_all(http, collection, [("after-full.md", text_document(502, 4))])
    wait_indexed(http, stack_, later)
    assert_consistent(postgres, data)
