"""JSON logs of a started team shape (web + Celery workers): one object per line, ids carried from the
request to its task, and no secret anywhere in the output."""

from __future__ import annotations

import json
import secrets
import sys
import time
import urllib.request

import pytest

from tests.e2e.pg import create_migrated_database, drop_database
from tests.e2e.processes import Http, Process, child_env, free_port, manage, run_manage
from tests.e2e.services import Redis

pytestmark = [pytest.mark.team, pytest.mark.slow]


def _lines(process: Process) -> list[dict]:
    objects = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        if line.strip():
            objects.append(json.loads(line))  # every line is one JSON object, or this fails
    return objects


@pytest.fixture
def team(tmp_path):
    psycopg = pytest.importorskip("psycopg")
    name = f"cairn_logs_{secrets.token_hex(4)}"
    try:
        url = create_migrated_database(name)  # what `manage.py migrate` makes (tests/e2e/pg.py)
    except psycopg.OperationalError:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    redis = Redis(tmp_path)
    env = child_env(
        DATABASE_URL=url, CAIRN_REDIS_URL=redis.url, CAIRN_SECRET_KEY=secrets.token_urlsafe(40),
        CAIRN_ALLOWED_HOSTS="127.0.0.1,localhost", CAIRN_DATA_DIR=str(tmp_path / "shared"),
        CAIRN_SECURE_COOKIES="0", CAIRN_LOG_FORMAT="json",
    )
    processes: list[Process] = []
    try:
        token = run_manage(env, "cairn_apikey", "--user", "alice", "--create-user").strip()
        celery = [sys.executable, "-m", "celery", "-A", "config", "--quiet", "worker", "--prefetch-multiplier", "1",
                  "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
        processes.append(Process("ingest", [*celery, "-Q", "ingest", "-c", "1", "-n", "ingest@%h"], env, tmp_path))
        processes.append(Process("index", [*celery, "-Q", "index", "-c", "1", "-n", "index@%h"], env, tmp_path))
        port = free_port()
        web = Process("web", manage("cairn_web", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
                      env, tmp_path)
        processes.append(web)
        http = Http(f"http://127.0.0.1:{port}", token=token)
        http.wait_until_up(web)
        yield http, token, {p.name: p for p in processes}
    finally:
        for process in processes:
            process.stop()
        redis.close()
        drop_database(name)


def test_json_logs_carry_ids_from_request_to_task_and_no_secrets(team):
    http, token, processes = team
    status, collection = http.post_json("/api/v1/collections", {"name": "Logs"})
    assert status == 201, collection

    # Given an upload with a well-formed X-Request-ID, and requests carrying secrets
    request_id = "upload-" + secrets.token_hex(6)
    boundary = "----cairn" + secrets.token_hex(8)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"pumps.txt\"\r\n"
            f"Content-Type: text/plain\r\n\r\nThe pump room code is heron-7.\r\n--{boundary}--\r\n").encode()
    status, document = http.request("POST", f"/api/v1/collections/{collection['id']}/documents", body=body,
                                     content_type=f"multipart/form-data; boundary={boundary}",
                                     headers={"X-Request-ID": request_id})
    assert status == 201, document
    assert http.wait_for_document(document["id"])["status"] == "INDEXED"

    bogus_key = "cairn_abcd1234_" + secrets.token_urlsafe(32)
    anonymous = Http(http.base, token=bogus_key)
    status, _ = anonymous.request("GET", "/api/v1/collections", headers={"X-Request-ID": "bad id with spaces!"})
    assert status == 401
    password = "correct-horse-" + secrets.token_hex(6)
    anonymous.request("POST", "/login/", body=f"username=alice&password={password}".encode(),
                      content_type="application/x-www-form-urlencoded")
    # Then the response echoes the incoming id, and a malformed one is replaced
    request = urllib.request.Request(http.base + "/healthz", headers={"X-Request-ID": "bad id!"})
    with urllib.request.urlopen(request) as response:
        echoed = response.headers["X-Request-ID"]
    assert echoed and echoed != "bad id!" and len(echoed) == 16

    time.sleep(1)
    web, ingest = _lines(processes["web"]), _lines(processes["ingest"])
    assert all({"time", "level", "logger", "message"} <= set(line) for line in web + ingest)

    # The web's request line names the request id and the user; the worker's task line carries both across
    upload_lines = [line for line in web if line.get("request_id") == request_id and line["logger"] == "cairn.requests"]
    assert upload_lines and upload_lines[0]["message"].startswith("POST /api/v1/collections/")
    assert upload_lines[0].get("user_id")
    task_lines = [line for line in ingest if line.get("task") == "cairn.ingest.process"]
    ours = [line for line in task_lines if line.get("request_id") == request_id]
    assert ours, task_lines[-5:]
    assert ours[-1]["user_id"] == upload_lines[0]["user_id"] and ours[-1]["job_id"] and ours[-1]["task_id"]

    # And no secret is anywhere in any process's output
    everything = "".join(p.log_path.read_text(errors="replace") for p in processes.values())
    # (a key is cairn_<prefix>_<secret>, and the secret itself may hold "_": split off the prefix only)
    for secret in (token, bogus_key, password, token.split("_", 2)[-1], bogus_key.split("_", 2)[-1]):
        assert secret not in everything
