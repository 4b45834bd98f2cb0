"""The REST API end to end in one process (tasks run inline; real parsers, embedder and index)."""

from __future__ import annotations

import os

import pytest

from kb.models import Chunk, Document, DocumentVersion
from kb.selectors import searchable_ranges, searchable_versions
from tests.ingestion.sample_files import make_pdf
from tests.kb.conftest import upload

pytestmark = pytest.mark.django_db(transaction=True)

def make_zip() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not a docx")
    return buffer.getvalue()


PAGES = [
    "Cairn keeps every document on your own machine. Nothing is sent to a cloud service.",
    "The quarterly maintenance window for the turbine hall starts at 06:00 on the first Sunday.",
    "Visitors must sign in at the front desk and wear a badge at all times.",
]


def test_a_pdf_is_indexed_and_a_phrase_on_page_two_is_found_with_its_page(api, collection_id):
    response = upload(api, collection_id, "handbook.pdf", make_pdf(PAGES))
    assert response.status_code == 201, response.content
    document = api.get(f"/api/v1/documents/{response.json()['id']}").json()
    assert document["status"] == "INDEXED" and document["error"] == "" and document["version"] == 1
    assert document["pages"] == 3 and document["kind"] == "pdf"

    results = api.get("/api/v1/search", {"q": "turbine hall maintenance window", "collection": collection_id}).json()["results"]

    assert results[0]["page"] == 2 and "turbine hall" in results[0]["text"]
    assert results[0]["document_id"] == document["id"] and results[0]["score"] > 0


def test_ask_cites_real_chunks_of_the_document(api, collection_id):
    doc_id = upload(api, collection_id, "handbook.pdf", make_pdf(PAGES)).json()["id"]

    body = api.post("/api/v1/ask", {"question": "When does the turbine hall maintenance window start?",
                                    "collection": collection_id}, format="json").json()

    chunk_ids = set(Chunk.objects.unrestricted("test").filter(document_id=doc_id).values_list("id", flat=True))
    assert body["citations"] and {c["chunk_id"] for c in body["citations"]} <= chunk_ids
    assert all(c["document_id"] == doc_id for c in body["citations"])
    assert "06:00" in body["answer"] and body["generated"] is False
    assert any(c["page"] == 2 for c in body["citations"])


def test_the_same_bytes_twice_are_one_document(api, collection_id):
    first = upload(api, collection_id, "a.md", b"# Title\n\nSome unique words here.\n")
    second = upload(api, collection_id, "copy-of-a.md", b"# Title\n\nSome unique words here.\n")
    assert first.status_code == 201 and second.status_code == 200
    assert second.json()["id"] == first.json()["id"] and second.json()["duplicate"] is True


def test_a_changed_file_becomes_a_new_version_that_replaces_the_old_in_search(api, collection_id):
    doc_id = upload(api, collection_id, "policy.txt", b"The office opens at eight o'clock.").json()["id"]
    response = upload(api, collection_id, "policy.txt", b"The office opens at nine o'clock sharp.")
    assert response.status_code == 201 and response.json()["id"] == doc_id
    assert response.json()["version"] == 2 and response.json()["searchable_version"] == 2

    texts = [r["text"] for r in api.get("/api/v1/search", {"q": "office opens", "collection": collection_id}).json()["results"]]
    assert any("nine" in t for t in texts) and not any("eight" in t for t in texts)
    assert DocumentVersion.objects.unrestricted("test").get(document_id=doc_id, number=1).superseded_at is not None
    # The range searches read is the one of the version that became current.
    document = Document.objects.unrestricted("test").select_related("current_version").get(pk=doc_id)
    assert document.current_version.number == 2
    assert (document.search_chunk_start, document.search_chunk_count) == (
        document.current_version.chunk_id_start, document.current_version.chunk_count)
    owner = document.collection.owner
    assert searchable_ranges(owner).tolist() == [
        list(r) for r in searchable_versions(owner).values_list("chunk_id_start", "chunk_count")]


def test_a_deleted_document_disappears_from_search_at_once_and_from_the_index_on_compaction(api, collection_id):
    doc_id = upload(api, collection_id, "secret.txt", b"The vault code is kept by the night manager.").json()["id"]
    assert api.get("/api/v1/search", {"q": "vault code", "collection": collection_id}).json()["results"]

    assert api.delete(f"/api/v1/documents/{doc_id}").status_code == 204

    assert api.get("/api/v1/search", {"q": "vault code", "collection": collection_id}).json()["results"] == []
    assert api.get(f"/api/v1/documents/{doc_id}").status_code == 404
    # inline tasks ran the compaction the delete queued
    assert not Chunk.objects.unrestricted("test").filter(document_id=doc_id).exists()
    from kb.index import index_reader

    assert all(c not in index_reader().snapshot().lexical for c in range(1, 50))


@pytest.mark.parametrize(
    "name, data, expected_status, expected_error",
    [
        ("empty.pdf", b"", 400, "empty"),
        ("random.bin", os.urandom(4096), 415, "binary"),
        ("archive.zip", make_zip(), 415, "zip"),
        ("cut.pdf", make_pdf(PAGES)[:300], 201, "PDF"),
    ],
    ids=["empty.pdf", "random.bin", "archive.zip", "cut.pdf"],  # not the bytes: xdist workers must agree
)
def test_bad_files_are_refused_or_fail_with_a_readable_reason(api, collection_id, isolated_storage,
                                                              name, data, expected_status, expected_error):
    response = upload(api, collection_id, name, data)
    assert response.status_code == expected_status, response.content
    if response.status_code != 201:
        assert expected_error.lower() in response.json()["error"]["message"].lower()
        assert not [p for p in (isolated_storage / "blobs").rglob("*") if p.is_file()]  # refused bytes not kept
        return
    document = api.get(f"/api/v1/documents/{response.json()['id']}").json()
    assert document["status"] == "FAILED"
    assert expected_error.lower() in document["error"].lower()
    assert document["attempts"] == 1  # a parse error is final: no retry loop


def test_a_file_over_the_size_limit_is_refused_with_413(api, collection_id, settings):
    settings.CAIRN_MAX_UPLOAD_BYTES = 1024
    response = upload(api, collection_id, "big.txt", b"x" * 4096)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_path_like_names_are_refused_and_nothing_is_written_outside_storage(api, collection_id, isolated_storage):
    response = upload(api, collection_id, "../../etc/passwd", b"root is not here, just text.")
    assert response.status_code == 400
    assert "without folders" in response.json()["error"]["message"]
    assert upload(api, collection_id, "..\\..\\boot.ini", b"x").status_code == 400
    written = {p.relative_to(isolated_storage).parts[0] for p in isolated_storage.rglob("*") if p.is_file()}
    assert written <= {"blobs", "index"}


def test_a_name_with_a_nul_byte_is_refused(api, collection_id):
    response = upload(api, collection_id, "evil\x00.txt", b"hello")
    assert response.status_code == 400
    assert "control characters" in response.json()["error"]["message"]


@pytest.mark.parametrize("bad_id", ["999999", "abc", "-1", "99999999999999999999999"])
def test_unknown_collection_ids_are_404_with_the_error_shape(api, bad_id):
    response = upload(api, bad_id, "a.txt", b"hello")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "No such collection.", "details": {}}}
    assert api.get("/api/v1/search", {"q": "x", "collection": bad_id}).status_code in (400, 404)


def test_validation_errors_are_400_with_a_message(api, collection_id):
    response = api.post("/api/v1/collections", {}, format="json")
    assert response.status_code == 400 and "name" in response.json()["error"]["message"]
    assert api.get("/api/v1/search").status_code == 400
    assert api.post("/api/v1/ask", {"question": ""}, format="json").status_code == 400
    assert api.post(f"/api/v1/collections/{collection_id}/documents", {}, format="multipart").status_code == 400


def test_failed_document_can_be_reprocessed(api, collection_id):
    doc_id = upload(api, collection_id, "bad.pdf", make_pdf(PAGES)[:300]).json()["id"]
    response = api.post(f"/api/v1/documents/{doc_id}/reprocess")
    assert response.status_code == 202
    assert api.get(f"/api/v1/documents/{doc_id}").json()["status"] == "FAILED"  # still truncated
    assert api.post(f"/api/v1/documents/{doc_id}/reprocess").status_code == 202


def test_cross_site_browser_posts_are_refused_in_personal_mode(api):
    response = api.post("/api/v1/collections", {"name": "x"}, format="json", HTTP_SEC_FETCH_SITE="cross-site")
    assert response.status_code == 403
    response = api.post("/api/v1/collections", {"name": "x"}, format="json", HTTP_ORIGIN="http://evil.example")
    assert response.status_code == 403


def test_the_owner_renames_a_collection_and_nobody_else_can(api, collection_id, settings):
    response = api.patch(f"/api/v1/collections/{collection_id}", {"name": "  Field manuals  "}, format="json")
    assert response.status_code == 200 and response.json()["name"] == "Field manuals"
    assert api.patch(f"/api/v1/collections/{collection_id}", {"name": ""}, format="json").status_code == 400
    assert api.patch(f"/api/v1/collections/{collection_id}", {"name": "x" * 201}, format="json").status_code == 400
    from access.models import AuditEvent, User
    from access.services import SYSTEM, api_key_create
    from kb.models import Collection
    from kb.services import collection_share

    assert AuditEvent.objects.filter(action="collection.update").count() == 1
    settings.CAIRN_MODE = "team"
    viewer = User.objects.create(username="vera")
    collection_share(actor=SYSTEM, collection=Collection.objects.get(pk=collection_id), principal=viewer,
                     role="editor")
    _, secret = api_key_create(user=viewer, name="t", actor=SYSTEM)
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.patch(f"/api/v1/collections/{collection_id}", {"name": "Mine"}, format="json").status_code == 403
    assert Collection.objects.get(pk=collection_id).name == "Field manuals"


def test_versions_are_listed_and_an_earlier_one_restored(api, collection_id):
    first = upload(api, collection_id, "rota.txt", b"The night shift starts at ten.").json()
    boundary = "cairnboundary7f3a"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="rota.txt"\r\n'
            "Content-Type: text/plain\r\n\r\n").encode() + b"The night shift starts at eleven." + \
        f"\r\n--{boundary}--\r\n".encode()
    second = api.generic("POST", f"/api/v1/documents/{first['id']}/versions", body,
                         content_type=f"multipart/form-data; boundary={boundary}")
    assert second.status_code == 201 and second.json()["version"] == 2
    listed = api.get(f"/api/v1/documents/{first['id']}/versions").json()["results"]
    assert [v["number"] for v in listed] == [2, 1] and listed[0]["searchable"] and listed[1]["bytes_kept"]

    restored = api.post(f"/api/v1/documents/{first['id']}/versions/1/restore")
    assert restored.status_code == 201 and restored.json()["version"] == 3, restored.content
    assert restored.json()["sha256"] == first["sha256"]
    hits = api.get("/api/v1/search", {"q": "night shift", "k": 1}).json()["results"]
    assert "ten" in hits[0]["text"] and hits[0]["version"] == 3
    assert api.post(f"/api/v1/documents/{first['id']}/versions/3/restore").status_code == 200  # already newest
    assert api.post(f"/api/v1/documents/{first['id']}/versions/9/restore").status_code == 404
    assert api.post(f"/api/v1/documents/{first['id']}/versions/x/restore").status_code == 404
