"""Team shape with real parts: PostgreSQL, Redis, Celery worker processes per queue, the web process."""

from __future__ import annotations

import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.pg import create_migrated_database, drop_database
from tests.e2e.processes import ROOT, Http, Process, child_env, free_port, manage, run_manage
from tests.ingestion.sample_files import make_docx, make_pdf

# The machine's Redis at fixed database numbers: every such module runs in one pytest-xdist worker.
pytestmark = [pytest.mark.team, pytest.mark.slow, pytest.mark.xdist_group("redis-6379")]

PG = "postgres://postgres@127.0.0.1:5432"
WEB_GUARD = Path(__file__).resolve().parent / "web_guard"
REDIS_DB = 11


def _services_or_skip() -> None:
    import psycopg
    import redis

    try:
        psycopg.connect(f"{PG}/test", connect_timeout=3).close()
        redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}", socket_connect_timeout=3).ping()
    except Exception as exc:  # the suite says why instead of failing obscurely
        pytest.fail(f"team-mode tests need PostgreSQL and Redis on 127.0.0.1 (see .ci/run): {exc}")


def documents(n: int) -> list[tuple[str, bytes]]:
    topics = ["harbour", "glacier", "orchard", "foundry", "observatory", "monastery", "vineyard", "reactor",
              "library", "quarry", "lighthouse", "brewery", "canal", "sawmill", "aqueduct", "tannery",
              "windmill", "mint", "bakery", "shipyard"]
    out = []
    for i in range(n):
        topic = topics[i % len(topics)]
        paragraphs = [
            f"# The {topic} report {i}",
            f"The {topic} number {i} opened in {1800 + i}. Its keeper wrote the code word kestrel-{i} in the log.",
            *(f"Section {j}: daily routines at the {topic} include inspections, repairs and inventory "
              f"of tools, written down carefully by shift {j} of team {i}." for j in range(12)),
        ]
        out.append((f"{topic}-{i}.md", "\n\n".join(paragraphs).encode()))
    return out


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    _services_or_skip()
    import redis

    name = f"cairn_e2e_{secrets.token_hex(4)}"
    url = create_migrated_database(name)  # what `manage.py migrate` makes (tests/e2e/pg.py)
    redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}").flushdb()
    root = tmp_path_factory.mktemp("team")
    env = child_env(
        DATABASE_URL=url, CAIRN_REDIS_URL=f"redis://127.0.0.1:6379/{REDIS_DB}",
        CAIRN_SECRET_KEY=secrets.token_urlsafe(40), CAIRN_ALLOWED_HOSTS="127.0.0.1,localhost",
        CAIRN_DATA_DIR=str(root / "shared"), CAIRN_SECURE_COOKIES="0",
    )
    processes: list[Process] = []
    try:
        token = run_manage(env, "cairn_apikey", "--user", "alice", "--create-user").strip()
        celery = [sys.executable, "-m", "celery", "-A", "config", "worker", "--prefetch-multiplier", "1",
                  "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
        processes.append(Process("worker-ingest", [*celery, "-Q", "ingest", "-c", "2", "-n", "ingest@%h"], env, root))
        processes.append(Process("worker-index", [*celery, "-Q", "index", "-c", "1", "-n", "index@%h"], env, root))
        processes.append(Process("worker-inference", [*celery, "-Q", "inference", "-c", "1", "-n", "inference@%h"], env, root))
        port = free_port()
        # The web process runs with an import guard: parsing, chunking or embedding documents there fails.
        web_env = {**env, "PYTHONPATH": str(WEB_GUARD), "CAIRN_TEST_IMPORT_GUARD_LOG": str(root / "web-guard.log")}
        web = Process("web", manage("cairn_web", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
                      web_env, root)
        processes.append(web)
        http = Http(f"http://127.0.0.1:{port}", token=token)
        http.wait_until_up(web)
        yield http, processes, web_env, name
    finally:
        for process in processes:
            process.stop()
        drop_database(name)


def _expected_chunks(files: list[tuple[str, bytes]]) -> int:
    """What one clean, single-process run produces for the same files."""
    from django.conf import settings

    from ingestion.chunking import chunk_document
    from ingestion.parsers import parse
    from kb.index import get_embedder

    tokenizer = get_embedder(None).tokenizer
    return sum(
        len(chunk_document(parse(data), tokenizer, size_tokens=settings.CAIRN_CHUNK_TOKENS,
                           overlap_tokens=settings.CAIRN_CHUNK_OVERLAP))
        for _, data in files
    )


def test_twenty_concurrent_uploads_all_end_indexed_without_duplicate_chunks(team):
    http, processes, env, db_name = team
    status, collection = http.post_json("/api/v1/collections", {"name": "Sites"})
    assert status == 201, collection
    files = documents(20)

    def send(item: tuple[str, bytes]) -> dict:
        status, body = http.upload(f"/api/v1/collections/{collection['id']}/documents", *item)
        assert status == 201, body
        return body

    with ThreadPoolExecutor(max_workers=8) as pool:
        uploaded = list(pool.map(send, files))
    try:
        finals = [http.wait_for_document(d["id"], timeout=240) for d in uploaded]
    except AssertionError as exc:  # say why: the workers' logs hold the traceback
        raise AssertionError(f"{exc}\n" + "\n".join(f"== {p.name}\n{p.log()}" for p in processes)) from None

    assert [d["status"] for d in finals] == ["INDEXED"] * 20, [d["error"] for d in finals]
    expected = _expected_chunks(files)
    assert sum(d["chunks"] for d in finals) == expected

    import psycopg

    with psycopg.connect(f"{PG}/{db_name}") as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT (version_id, ordinal)) FROM kb_chunk").fetchone()
    assert rows == (expected, expected)

    status, found = http.get(f"/api/v1/search?q=kestrel-7%20code%20word&collection={collection['id']}&k=5")
    assert status == 200 and found["results"], "\n".join(p.log()[-5000:] for p in processes)
    assert found["results"][0]["document_id"] == uploaded[7]["id"]

    status, answer = http.post_json("/api/v1/ask", {"question": "Which code word did the keeper of orchard 2 write?",
                                                     "collection": collection["id"]})
    assert status == 200, answer
    assert answer["citations"] and any(c["document_id"] == uploaded[2]["id"] for c in answer["citations"])
    assert all(p.alive() for p in processes), [p.log() for p in processes if not p.alive()]


def test_the_web_process_never_parses_or_embeds_documents(team):
    http, processes, web_env, _ = team
    guard_log = Path(web_env["CAIRN_TEST_IMPORT_GUARD_LOG"])
    # The guard itself works: in a process with the web's environment, a parse fails and is logged.
    probe = subprocess.run([sys.executable, "-c", "from ingestion.parsers import parse; parse(b'# Title')"],
                           cwd=ROOT, env=web_env, capture_output=True, text=True)
    assert probe.returncode != 0 and "must never parse documents" in probe.stderr, probe.stderr
    assert guard_log.read_text().splitlines() == ["ingestion.parsers.parse"]
    guard_log.unlink()

    # A PDF and a DOCX go through the web process (which sniffs their type) and end INDEXED by the workers.
    status, collection = http.post_json("/api/v1/collections", {"name": "Formats"})
    assert status == 201, collection
    uploads = [("minutes.pdf", make_pdf(["The quarry crew blasts at noon on Tuesdays."])),
               ("rota.docx", make_docx([(1, "Rota"), "The tannery night shift starts at ten."]))]
    for filename, data in uploads:
        status, body = http.upload(f"/api/v1/collections/{collection['id']}/documents", filename, data)
        assert status == 201, body
        final = http.wait_for_document(body["id"], timeout=240)
        assert final["status"] == "INDEXED", final["error"]

    web = next(p for p in processes if p.name == "web")
    ingest_log = next(p for p in processes if p.name == "worker-ingest").log()
    assert web.alive(), web.log()
    assert not guard_log.exists(), f"the web process imported {guard_log.read_text().split()}"
    assert "cairn.ingest.process" in ingest_log
    assert "cairn.ingest.process" not in web.log()


def test_unauthenticated_and_bad_keys_are_refused(team):
    http, *_ = team
    anonymous = Http(http.base)
    assert anonymous.get("/api/v1/collections")[0] in (401, 403)
    status, body = Http(http.base, token="cairn_deadbeef_nope").get("/api/v1/collections")
    assert status == 401 and body["error"]["code"] in ("authentication_failed", "not_authenticated")
