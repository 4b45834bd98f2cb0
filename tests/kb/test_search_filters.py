"""Search filters (file type, upload date, document attributes) and results grouped by document, via the REST API.

The filters narrow the chunk-id mask both retrieval legs search inside, together with the
permission filter, so a filtered search returns ``k`` passages whenever ``k`` match — even when
the unfiltered top ``k`` holds none of them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rest_framework.test import APIClient

from access.administration import policy_set
from access.models import AuditEvent, User
from access.models import Policy as PolicyRow
from access.services import SYSTEM, api_key_create
from kb import services
from kb.api.views import result_groups
from kb.models import Collection, Document, DocumentVersion
from kb.search import SearchResult
from tests.kb.permission_corpus import WORD, build_corpus, one_torch_thread  # noqa: F401

pytestmark = pytest.mark.django_db

N_DOCS = 40


def client_for(user: User) -> APIClient:
    _, secret = api_key_create(user=user, name="tests", actor=SYSTEM)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def world(isolated_storage, settings, one_torch_thread):  # noqa: F811 (a fixture)
    """40 one-passage documents: every 4th a PDF of research uploaded in 2024; a policy hides half of those."""
    settings.CAIRN_RERANKER = None
    owner = User.objects.create(username="owner", attributes={"clearance": "secret"})
    reader = User.objects.create(username="reader", attributes={"clearance": "internal"})
    collection = Collection.objects.create(name="Field notes", owner=owner)
    documents = build_corpus(collection, owner, N_DOCS)
    for i, document in enumerate(documents):
        research = i % 4 == 0
        hidden = i % 8 == 0  # half of the research PDFs are secret
        Document.objects.unrestricted("test setup").filter(pk=document.pk).update(
            attributes={
                "department": "research" if research else "sales",
                "tags": ["field", "herd"] if research else ["field"],
                "sensitivity": "secret" if hidden else "internal",
            },
            created_at=datetime(2024 if research else 2025, 3, 1 + i % 20, 12, tzinfo=UTC),
        )
        DocumentVersion.objects.unrestricted("test setup").filter(document=document).update(
            kind="pdf" if research else "text"
        )
    services.collection_share(actor=SYSTEM, collection=collection, principal=reader, role="viewer")
    policy_set(
        actor=SYSTEM,
        scope=PolicyRow.collection_scope(collection.pk),
        source='doc.sensitivity == "internal" or user.clearance == "secret"',
        collection_id=collection.pk,
    )
    return client_for(owner), client_for(reader), collection, documents


def search(client: APIClient, **params) -> dict:
    response = client.get("/api/v1/search", {"q": WORD, "k": 5, "rerank": 0, **params})
    assert response.status_code == 200, response.content
    return response.json()


def titles(body: dict) -> set[str]:
    return {r["title"] for r in body["results"]}


def test_filters_with_permissions_still_return_k_results_when_k_match(world):
    owner, reader, collection, documents = world
    # Given 10 research PDFs, of which the reader may see 5 (the policy hides every 8th document)
    readable_research = {f"doc-{i}" for i in range(N_DOCS) if i % 4 == 0 and i % 8 != 0}
    assert len(readable_research) == 5
    # When the reader filters on type and attribute with k=5
    body = search(reader, collection=collection.pk, kind="pdf", attr="department=research")
    # Then every matching readable document comes back: the filters ran inside retrieval, not after top-k
    assert titles(body) == readable_research
    # The unfiltered top 5 would have held other documents (so dropping after top-k could not pass this)
    assert titles(search(reader, collection=collection.pk)) != readable_research
    # And the owner, who sees the secret ones too, gets 5 of the 10 research PDFs
    assert titles(search(owner, collection=collection.pk, kind="pdf")) <= {
        f"doc-{i}" for i in range(0, N_DOCS, 4)
    }
    assert len(search(owner, collection=collection.pk, kind="pdf")["results"]) == 5


def test_attribute_filters_match_strings_and_lists_and_are_anded(world):
    owner, _, collection, _ = world
    research = {f"doc-{i}" for i in range(0, N_DOCS, 4)}
    assert titles(search(owner, k=50, attr="tags=herd")) == research
    assert titles(search(owner, k=50, attr=["tags=herd", "sensitivity=secret"])) == {
        f"doc-{i}" for i in range(0, N_DOCS, 8)
    }
    assert search(owner, k=50, attr=["department=research", "department=sales"])["results"] == []
    assert search(owner, k=50, kind="docx")["results"] == []


def test_upload_date_filter_includes_both_days(world):
    owner, _, _, _ = world
    body = search(owner, k=50, uploaded_after="2024-03-01", uploaded_before="2024-03-01")
    assert titles(body) == {"doc-0", "doc-20"}  # research documents uploaded on 1 March 2024
    assert titles(search(owner, k=50, uploaded_after="2025-01-01")) == {
        f"doc-{i}" for i in range(N_DOCS) if i % 4
    }
    event = AuditEvent.objects.filter(action="kb.search").last()
    assert event.detail["filters"]["uploaded_after"].startswith("2025-01-01")


def test_filters_are_audited_without_attribute_values(world):
    owner, _, _, _ = world
    search(owner, attr="department=research")
    event = AuditEvent.objects.filter(action="kb.search").last()
    assert event.detail["filters"]["attribute_keys"] == ["department"]
    assert "research" not in str(event.detail)


@pytest.mark.parametrize(
    "params",
    [
        {"kind": "exe"},
        {"uploaded_after": "2024-13-01"},
        {"uploaded_before": "yesterday"},
        {"uploaded_before": "2024-05-01", "uploaded_after": "2024-05-02"},
        {"attr": "no equals sign"},
        {"attr": "bad key=1"},
        {"attr": "=value"},
        {"attr": [f"k{i}=v" for i in range(11)]},
        {"mode": "fuzzy"},
    ],
)
def test_bad_filter_values_are_a_400_naming_the_parameter(world, params):
    owner, _, _, _ = world
    response = owner.get("/api/v1/search", {"q": WORD, **params})
    assert response.status_code == 400, response.content
    assert next(iter(params)) in str(response.json()["error"]), response.json()


def result(chunk_id: int, document_id: int) -> SearchResult:
    return SearchResult(
        chunk_id=chunk_id,
        document_id=document_id,
        collection_id=1,
        title=f"d{document_id}",
        version=1,
        page=None,
        heading="",
        text="",
        char_start=0,
        char_end=0,
        score=1.0 / chunk_id,
        dense_rank=None,
        lexical_rank=None,
    )


def test_results_are_grouped_by_document_in_order_of_their_best_result():
    ranked = [result(1, 7), result(2, 3), result(3, 7), result(4, 9), result(5, 3), result(6, 7)]
    groups = result_groups(ranked)
    assert [(g["document_id"], g["best_rank"], g["results"]) for g in groups] == [
        (7, 1, [0, 2, 5]),
        (3, 2, [1, 4]),
        (9, 4, [3]),
    ]


def test_the_api_returns_the_groups_with_the_flat_ranking(world):
    owner, _, _, _ = world
    body = search(owner, k=50)
    flat = body["results"]
    assert len(body["groups"]) == len(flat) == N_DOCS  # one passage each
    for group in body["groups"]:
        assert [flat[i]["document_id"] for i in group["results"]] == [group["document_id"]]
        assert flat[group["best_rank"] - 1]["title"] == group["title"]
