"""Personal mode as a user meets it: one `cairn_serve` process, real background worker, HTTP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.processes import Http, Process, child_env, free_port, manage
from tests.ingestion.sample_files import make_pdf

pytestmark = pytest.mark.slow

PAGES = [
    "Welcome to the plant handbook. It covers safety, shifts and maintenance.",
    "Boiler number three must be descaled every ninety days by a certified technician.",
    "Emergency exits are marked in green and must never be blocked.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("personal")
    data = root / "data"
    port = free_port()
    env = child_env(CAIRN_DATA_DIR=str(data), CAIRN_MAX_UPLOAD_MB="1")
    process = Process("cairn_serve", manage("cairn_serve", "--host", "127.0.0.1", "--port", str(port)), env, root)
    http = Http(f"http://127.0.0.1:{port}")
    try:
        http.wait_until_up(process)
        yield http, process, root, data
    finally:
        process.stop()


def test_home_page_answers(server):
    http, *_ = server
    status, body = http.get("/")
    assert status == 200 and b"Cairn" in body


def test_pdf_upload_indexes_and_search_and_ask_cite_page_two(server):
    http, process, _, data = server
    status, collection = http.post_json("/api/v1/collections", {"name": "Plant"})
    assert status == 201
    status, document = http.upload(f"/api/v1/collections/{collection['id']}/documents", "handbook.pdf", make_pdf(PAGES))
    assert status == 201 and document["status"] in ("PENDING", "PARSING", "CHUNKING", "EMBEDDING", "INDEXED")

    document = http.wait_for_document(document["id"])
    assert document["status"] == "INDEXED", document

    status, found = http.get(f"/api/v1/search?q=descaled%20every%20ninety%20days&collection={collection['id']}&k=10")
    assert status == 200
    top = found["results"][0]
    assert top["page"] == 2 and "ninety days" in top["text"] and top["score"] > 0

    status, answer = http.post_json("/api/v1/ask", {"question": "How often must boiler three be descaled?",
                                                     "collection": collection["id"]})
    assert status == 200 and answer["answer"] and answer["citations"]
    for citation in answer["citations"]:
        status, chunk = http.get(f"/api/v1/chunks/{citation['chunk_id']}")
        assert status == 200 and chunk["document_id"] == document["id"]
    assert (data / "cairn.sqlite3").exists()


def test_bad_input_gets_4xx_or_a_failed_job_and_the_worker_survives(server):
    http, process, root, data = server
    _, collection = http.post_json("/api/v1/collections", {"name": "Bad input"})
    docs = f"/api/v1/collections/{collection['id']}/documents"

    status, body = http.upload(docs, "empty.pdf", b"")
    assert status == 400 and body["error"]["message"]

    status, body = http.upload(docs, "noise.bin", os.urandom(8192))
    assert status == 415 and "binary" in body["error"]["message"]

    status, body = http.upload(docs, "cut.pdf", make_pdf(PAGES)[:400])
    assert status == 201, body
    document = http.wait_for_document(body["id"])
    assert document["status"] == "FAILED" and "PDF" in document["error"], document

    status, body = http.upload(docs, "huge.txt", b"a" * (2 * 1024 * 1024))
    assert status == 413 and "limit" in body["error"]["message"]

    status, body = http.upload(docs, "../../etc/passwd", b"just a text file with a scary name")
    assert status == 400 and "folders" in body["error"]["message"]
    status, body = http.upload(docs, "nul\x00byte.txt", b"hello")
    assert 400 <= status < 500

    status, body = http.upload("/api/v1/collections/424242/documents", "a.txt", b"hello")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = http.get("/api/v1/documents/not-a-number")
    assert status == 404

    # nothing escaped the data directory, and the worker still processes documents
    outside = [p for p in root.rglob("*") if p.is_file() and data not in p.parents and not p.name.endswith(".log")]
    assert outside == []
    status, body = http.upload(docs, "fine.txt", b"After the bad files, this one is fine and searchable.")
    assert http.wait_for_document(body["id"])["status"] == "INDEXED"
    assert process.alive()
    assert not Path("/etc/passwd").read_text().startswith("just a text file")
