"""The citation viewer's API: page images and passage boxes of real PDFs (tasks inline, real pdfium)."""

from __future__ import annotations

import struct

import pytest

from access.models import AuditEvent
from kb.models import Chunk
from tests.ingestion.sample_files import make_pdf
from tests.kb.conftest import upload
from tests.kb.permission_corpus import one_torch_thread  # noqa: F401
from tests.kb.test_api_permissions import client_for, denials

pytestmark = pytest.mark.django_db(transaction=True)

FILLER = "\n".join(f"Routine line {n} of the logbook." for n in range(40))
PAGES = [
    "Cairn keeps every document on your own machine. Nothing is sent to a cloud service.",
    "The quarterly maintenance window for the turbine hall starts at 06:00 on the first Sunday.\n\n" + FILLER,
    "Visitors must sign in at the front desk and wear a badge at all times.",
]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def pdf_doc(api, collection_id) -> int:
    response = upload(api, collection_id, "handbook.pdf", make_pdf(PAGES))
    assert response.status_code == 201, response.content
    assert api.get(f"/api/v1/documents/{response.json()['id']}").json()["status"] == "INDEXED"
    return response.json()["id"]


def chunk_with(document_id: int, words: str) -> Chunk:
    return next(c for c in Chunk.objects.unrestricted("test").filter(document_id=document_id) if words in c.text)


def test_a_page_is_a_real_png_of_that_page_bounded_in_width_and_cached_privately(api, pdf_doc, isolated_storage):
    first = api.get(f"/api/v1/documents/{pdf_doc}/pages/1.png")
    second = api.get(f"/api/v1/documents/{pdf_doc}/pages/2.png")

    assert first.status_code == 200 and first["Content-Type"] == "image/png"
    assert "private" in first["Cache-Control"]
    assert png_size(first.content)[0] == 1000 and png_size(first.content)[1] > 1000  # A4 is portrait
    assert first.content != second.content
    huge = api.get(f"/api/v1/documents/{pdf_doc}/pages/2.png", {"width": 99999})
    assert png_size(huge.content)[0] == 1600
    assert png_size(api.get(f"/api/v1/documents/{pdf_doc}/pages/2.png", {"width": 3}).content)[0] == 200
    cached = list((isolated_storage / "page-cache").glob("*/*.png"))
    assert len(cached) == 4 and all("-p" in p.name for p in cached)
    assert api.get(f"/api/v1/documents/{pdf_doc}/pages/2.png").content == second.content  # from the cache


@pytest.mark.parametrize("page", ["0", "4", "999999999999", "-1", "x"])
def test_a_page_out_of_range_is_404(api, pdf_doc, page):
    response = api.get(f"/api/v1/documents/{pdf_doc}/pages/{page}.png")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_a_document_that_is_not_a_pdf_has_no_page_image_and_no_boxes(api, collection_id):
    doc = upload(api, collection_id, "notes.md", b"# Notes\n\nThe heron nests by the lake in spring.\n").json()["id"]
    response = api.get(f"/api/v1/documents/{doc}/pages/1.png")
    assert response.status_code == 415 and "PDF" in response.json()["error"]["message"]
    chunk = chunk_with(doc, "heron")
    body = api.get(f"/api/v1/chunks/{chunk.pk}/boxes").json()
    assert body["page"] is None and body["boxes"] == [] and body["page_size"] is None


def test_boxes_lie_on_the_cited_page_where_the_text_is(api, pdf_doc):
    top = chunk_with(pdf_doc, "turbine hall")
    body = api.get(f"/api/v1/chunks/{top.pk}/boxes").json()

    assert body["page"] == 2 == top.page
    assert body["page_size"] == [pytest.approx(595.28, abs=0.1), pytest.approx(841.89, abs=0.1)]
    assert body["boxes"]
    for x0, y0, x1, y1 in body["boxes"]:
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert body["boxes"][0][1] < 0.1  # the passage opens the page
    assert all(y1 < 0.5 for _, _, _, y1 in body["boxes"][:1])
    # The page's text runs to the logbook's last line, well down the page.
    last = chunk_with(pdf_doc, "Routine line 39")
    lowest = max(y1 for _, _, _, y1 in api.get(f"/api/v1/chunks/{last.pk}/boxes").json()["boxes"])
    assert lowest > 0.5


def test_another_users_document_and_chunk_are_404_and_audited(pdf_doc, one_torch_thread):  # noqa: F811
    bob = client_for("bob")
    chunk = chunk_with(pdf_doc, "turbine hall")
    before = denials(bob.user)

    assert bob.get(f"/api/v1/documents/{pdf_doc}/pages/1.png").status_code == 404
    assert bob.get(f"/api/v1/chunks/{chunk.pk}/boxes").status_code == 404
    assert bob.get("/api/v1/documents/999999/pages/1.png").status_code == 404

    assert denials(bob.user) == before + 3
    event = AuditEvent.objects.filter(actor_id=bob.user.pk, outcome=AuditEvent.Outcome.DENIED).order_by("pk").first()
    assert event is not None and event.target_type == "document" and event.target_id == str(pdf_doc)


def test_a_damaged_pdf_page_is_refused_with_a_reason_not_a_crash(api, pdf_doc, isolated_storage):
    from kb.models import Document
    from kb.storage import blob_path

    version = Document.objects.unrestricted("test").get(pk=pdf_doc).current_version
    blob_path(version.sha256).write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 100)

    response = api.get(f"/api/v1/documents/{pdf_doc}/pages/1.png")
    assert response.status_code == 422 and response.json()["error"]["message"]


def test_a_passage_comes_with_its_context_when_asked(api, pdf_doc):
    chunk = chunk_with(pdf_doc, "turbine hall")
    plain = api.get(f"/api/v1/chunks/{chunk.pk}").json()
    assert "context_before" not in plain
    body = api.get(f"/api/v1/chunks/{chunk.pk}", {"context": 300}).json()
    assert 0 < len(body["context_before"]) <= 300 and "cloud service" in body["context_before"]
    assert api.get(f"/api/v1/chunks/{chunk.pk}", {"context": 99999}).status_code == 400


def test_the_deep_link_marks_the_passage_on_the_document_page(api, pdf_doc):
    chunk = chunk_with(pdf_doc, "turbine hall")
    html = api.get(f"/documents/{pdf_doc}/", {"chunk": chunk.pk}).content.decode()
    assert html.count("passage--target") == 1
    assert f'class="passage passage--target" id="chunk-{chunk.pk}"' in html
    assert "passage--target" not in api.get(f"/documents/{pdf_doc}/", {"chunk": "12x"}).content.decode()


def test_a_render_past_its_time_budget_is_stopped_and_refused(api, pdf_doc, settings):
    settings.CAIRN_PAGE_RENDER_TIMEOUT = 0.01  # no child process starts Python that fast

    response = api.get(f"/api/v1/documents/{pdf_doc}/pages/3.png")

    assert response.status_code == 422 and "CAIRN_PAGE_RENDER_TIMEOUT" in response.json()["error"]["message"]
