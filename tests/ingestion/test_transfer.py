"""cairn_export from a personal install (SQLite) and cairn_import into a team install (PostgreSQL), with real
processes: the same documents and chunk texts, the same top results for 20 queries, the importing owner's
permissions; a second import changes nothing; a changed byte is refused naming the file."""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.e2e.processes import child_env, manage, run_manage

# The machine's Redis at fixed database numbers: every such module runs in one pytest-xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.team, pytest.mark.xdist_group("redis-6379")]

PG = "postgresql://postgres@127.0.0.1:5432"
TOPICS = ["boiler descaling", "fire exits", "forklift licences", "chemical storage", "night shifts",
          "holiday requests", "laptop encryption", "visitor badges", "first aid kits", "noise protection"]
QUERIES = [f"rules for {t}" for t in TOPICS] + [f"who is responsible for {t}" for t in TOPICS]

SNAPSHOT = """
import json
from access.models import User
from access.services import personal_user
from django.conf import settings
from kb.models import Chunk, Document
from kb.search import chunk_search
user = personal_user() if settings.CAIRN_MODE == "personal" else User.objects.get(username="alice")
why = "test snapshot"
docs = sorted(Document.objects.unrestricted(why).filter(deleted_at__isnull=True).values_list("title", flat=True))
chunks = sorted(Chunk.objects.unrestricted(why).values_list("text", flat=True))
queries = %r
top = {q: [(r.title, r.text) for r in chunk_search(user, q, k=3)] for q in queries}
print("SNAPSHOT" + json.dumps({"docs": docs, "chunks": chunks, "top": top}))
"""


def _snapshot(env: dict[str, str]) -> dict:
    out = run_manage(env, "shell", "-c", SNAPSHOT % (QUERIES,))
    return json.loads(out.split("SNAPSHOT", 1)[1])


@pytest.fixture
def team_env(tmp_path):
    psycopg = pytest.importorskip("psycopg")
    name = f"cairn_import_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(f"{PG}/test", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    try:
        yield child_env(DATABASE_URL=f"{PG}/{name}", CAIRN_REDIS_URL="redis://127.0.0.1:6379/14",
                        CAIRN_TASKS="inline", CAIRN_SECRET_KEY=secrets.token_urlsafe(50),
                        CAIRN_ALLOWED_HOSTS="kb.example.org", CAIRN_DATA_DIR=str(tmp_path / "team"))
    finally:
        with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_personal_to_team_and_back_refusing_a_changed_archive(tmp_path, team_env):
    # Given a personal install with ten documents
    files = tmp_path / "files"
    files.mkdir()
    for i, topic in enumerate(TOPICS):
        (files / f"policy-{i}.txt").write_text(
            f"# Policy on {topic}\n\nThe rules for {topic} are kept by department {i}. "
            f"Department {i} is responsible for {topic} and reviews them every {i + 2} months.\n\n"
            + f"Further notes on {topic}: ask the office of department {i} before changing anything.\n" * 3)
    personal = child_env(CAIRN_DATA_DIR=str(tmp_path / "personal"), CAIRN_TASKS="inline")
    run_manage(personal, "cairn_ingest", str(files), "--collection", "Policies")
    archive = tmp_path / "policies.tar"
    exported = run_manage(personal, "cairn_export", str(archive), "--audit")
    assert "10 documents" in exported and "audit events" in exported

    # When it is imported into a team install for alice
    run_manage(team_env, "migrate", "--verbosity", "0")
    run_manage(team_env, "cairn_apikey", "--user", "alice", "--create-user")
    run_manage(team_env, "cairn_apikey", "--user", "bob", "--create-user")
    imported = run_manage(team_env, "cairn_import", str(archive), "--owner", "alice")
    assert "imported 10 documents" in imported
    # the personal install's audit log came along, verified on its own and kept apart from the team's chain
    kept = imported.split("apart from this install's chain: ", 1)[1].strip()
    assert kept.startswith("audit-imports/")
    assert "intact" in run_manage(team_env, "cairn_audit_verify", "--archive",
                                  str(Path(team_env["CAIRN_DATA_DIR"]) / kept))

    # Then the documents, chunk texts and top results for 20 queries are the same
    before, after = _snapshot(personal), _snapshot(team_env)
    assert after["docs"] == before["docs"] and len(after["docs"]) == 10
    assert after["chunks"] == before["chunks"]
    assert after["top"] == before["top"] and all(after["top"][q] for q in QUERIES)

    # And alice owns them, bob (no grant) sees nothing
    out = run_manage(team_env, "cairn_search", "rules for fire exits", "--user", "bob")
    assert "fire exits" not in out
    assert "fire exits" in run_manage(team_env, "cairn_search", "rules for fire exits", "--user", "alice")

    # A second import changes nothing
    assert "imported 0 documents (10 already present, 0 new collections)" in run_manage(
        team_env, "cairn_import", str(archive), "--owner", "alice")
    assert _snapshot(team_env) == after
    # each import is one event in the receiving chain, which still verifies
    assert "intact" in run_manage(team_env, "cairn_audit_verify")

    # A changed byte anywhere is refused, naming the file, before anything is loaded
    for target in ("data.json", "blobs/"):
        tampered = tmp_path / f"tampered-{target.strip('/').replace('.', '-')}.tar"
        _change_one_byte(archive, tampered, target)
        done = subprocess.run(manage("cairn_import", str(tampered), "--owner", "alice"), env=team_env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert "archive refused" in done.stderr and target in done.stderr, done.stderr


def _change_one_byte(source: Path, destination: Path, prefix: str) -> None:
    with tarfile.open(source) as tar_in, tarfile.open(destination, "w") as tar_out:
        changed = False
        for member in tar_in.getmembers():
            data = tar_in.extractfile(member).read()  # type: ignore[union-attr]
            if not changed and member.name.startswith(prefix):
                data = data[:20] + bytes([data[20] ^ 1]) + data[21:]
                changed = True
            tar_out.addfile(member, io.BytesIO(data))
