"""Golden sets: questions with expected documents, evaluation runs, the page, and who may use them."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from access.models import User
from access.services import Actor
from kb.models import EvaluationRun
from kb.services import collection_share
from tests.kb.conftest import upload

pytestmark = pytest.mark.django_db(transaction=True)

DOCS = {
    "boiler.txt": b"The boiler is descaled every month with citric acid by the maintenance crew.",
    "visitors.txt": b"Visitors sign in at the front desk and wear a visible badge at all times.",
    "backups.txt": b"Nightly backups of the database server are kept offsite for ninety days.",
}


@pytest.fixture
def docs(api, collection_id):
    ids = {}
    for name, data in DOCS.items():
        response = upload(api, collection_id, name, data)
        assert response.status_code == 201
        ids[name] = response.json()["id"]
    return ids


def golden_url(collection_id, suffix=""):
    return f"/api/v1/collections/{collection_id}/golden{suffix}"


def add_question(api, collection_id, question, expected):
    return api.post(golden_url(collection_id), {"question": question, "expected_documents": expected}, format="json")


def test_an_owner_builds_a_golden_set_and_each_run_records_metrics_and_the_model(api, collection_id, docs):
    first = add_question(api, collection_id, "How often is the boiler descaled?", [docs["boiler.txt"]])
    assert first.status_code == 201, first.content
    add_question(api, collection_id, "How long are database backups kept?", [docs["backups.txt"]])
    listed = api.get(golden_url(collection_id)).json()["results"]
    assert [q["expected_documents"] for q in listed] == [[docs["boiler.txt"]], [docs["backups.txt"]]]

    run = api.post(f"/api/v1/collections/{collection_id}/evaluations")

    assert run.status_code == 201, run.content
    body = run.json()
    assert body["questions"] == 2 and body["ndcg10"] == 1.0 and body["recall10"] == 1.0 and body["mrr10"] == 1.0
    assert body["embedding_model"] and body["index_version"] >= 1 and body["delta_ndcg10"] is None
    assert body["fusion"] == "convex minmax w=0.5"  # the settings' default: this collection was never tuned
    assert [d["ranks"] for d in body["details"]] == [{str(docs["boiler.txt"]): 1}, {str(docs["backups.txt"]): 1}]

    # The backups document goes away: the same question now misses, and the run says so against the last one.
    assert api.delete(f"/api/v1/documents/{docs['backups.txt']}").status_code == 204
    second = api.post(f"/api/v1/collections/{collection_id}/evaluations").json()
    assert second["ndcg10"] == pytest.approx(0.5) and second["delta_ndcg10"] == pytest.approx(-0.5)
    runs = api.get(f"/api/v1/collections/{collection_id}/evaluations").json()["results"]
    assert [r["id"] for r in runs] == [second["id"], body["id"]]

    assert api.delete(golden_url(collection_id, f"/{first.json()['id']}")).status_code == 204
    assert len(api.get(golden_url(collection_id)).json()["results"]) == 1


@pytest.mark.parametrize("payload", [
    {"question": "", "expected_documents": [1]},
    {"question": "Where?", "expected_documents": []},
    {"question": "Where?", "expected_documents": ["abc"]},
    {"question": "Where?"},
])
def test_malformed_questions_are_400(api, collection_id, payload):
    response = api.post(golden_url(collection_id), payload, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"


def test_expected_documents_must_be_in_the_collection(api, collection_id, docs):
    other = api.post("/api/v1/collections", {"name": "Other"}, format="json").json()["id"]
    elsewhere = upload(api, other, "elsewhere.txt", b"Forklift batteries are charged in bay seven.").json()["id"]

    response = add_question(api, collection_id, "Where are forklifts charged?", [elsewhere])

    assert response.status_code == 400 and str(elsewhere) in response.json()["error"]["message"]


def test_running_an_empty_set_or_deleting_a_missing_question_is_a_clear_error(api, collection_id):
    response = api.post(f"/api/v1/collections/{collection_id}/evaluations")
    assert response.status_code == 400 and "golden questions" in response.json()["error"]["message"]
    assert api.delete(golden_url(collection_id, "/999999")).status_code == 404
    assert api.delete(golden_url(collection_id, "/x")).status_code == 404


def test_the_set_is_capped(api, collection_id, docs, settings):
    settings.CAIRN_GOLDEN_MAX_QUESTIONS = 1
    assert add_question(api, collection_id, "One?", [docs["boiler.txt"]]).status_code == 201
    response = add_question(api, collection_id, "Two?", [docs["boiler.txt"]])
    assert response.status_code == 400 and "at most 1" in response.json()["error"]["message"]


def test_only_editors_owners_and_admins_may_see_or_run_it(api, collection_id, docs):
    add_question(api, collection_id, "How often is the boiler descaled?", [docs["boiler.txt"]])
    owner = User.objects.get(pk=api.get(f"/api/v1/collections/{collection_id}").wsgi_request.user.pk)
    collection = owner.collections.get(pk=collection_id)
    stranger, viewer, editor = (User.objects.create_user(n) for n in ("stranger", "viewer", "editor"))
    admin = User.objects.create_user("admin", role=User.Role.ADMIN)
    collection_share(actor=Actor(user=owner), collection=collection, principal=viewer, role="viewer")
    collection_share(actor=Actor(user=owner), collection=collection, principal=editor, role="editor")

    def client(user):
        c = APIClient()
        c.force_authenticate(user)
        return c

    for user in (stranger, viewer):
        c = client(user)
        assert c.get(golden_url(collection_id)).status_code == 404
        assert c.post(f"/api/v1/collections/{collection_id}/evaluations").status_code == 404
        assert c.get(f"/api/v1/collections/{collection_id}/evaluations").status_code == 404
        assert add_question(c, collection_id, "Sneaky?", [docs["boiler.txt"]]).status_code == 404
        page = Client()
        page.force_login(user)
        assert page.get(f"/collections/{collection_id}/evaluation/").status_code == 404
        if user is viewer:  # the collection page does not offer the link it cannot follow
            assert "Retrieval quality" not in page.get(f"/collections/{collection_id}/").content.decode()
    for user in (editor, admin):
        c = client(user)
        assert len(c.get(golden_url(collection_id)).json()["results"]) == 1
        run = c.post(f"/api/v1/collections/{collection_id}/evaluations")
        assert run.status_code == 201 and run.json()["ndcg10"] == 1.0  # searched as the owner
        page = Client()
        page.force_login(user)
        assert page.get(f"/collections/{collection_id}/evaluation/").status_code == 200
        if user is editor:
            assert "Retrieval quality" in page.get(f"/collections/{collection_id}/").content.decode()


def test_the_page_adds_questions_runs_and_shows_each_run_with_its_model(api, collection_id, docs):
    page = Client()  # loopback: the personal-mode owner
    url = f"/collections/{collection_id}/evaluation/"
    assert "No runs yet" in page.get(url).content.decode()

    added = page.post(url, {"action": "add", "question": "How long are database backups kept?",
                            "expected_documents": [str(docs["backups.txt"])]}, follow=True)
    assert "Question added" in added.content.decode()
    ran = page.post(url, {"action": "run"}, follow=True).content.decode()
    bad = page.post(url, {"action": "add", "question": "No documents?"}, follow=True).content.decode()

    run = EvaluationRun.objects.get(collection_id=collection_id)
    assert "Evaluated 1 question: nDCG@10 1.000" in ran and 'data-metric="ndcg10">1.000<' in ran
    assert run.embedding_model in ran and "How long are database backups kept?" in ran
    assert "Name at least one expected document" in bad


def test_a_full_reindex_reruns_every_golden_set(api, collection_id, docs):
    add_question(api, collection_id, "Who wears a badge?", [docs["visitors.txt"]])
    out = io.StringIO()

    call_command("cairn_reindex", stdout=out)

    run = EvaluationRun.objects.get(collection_id=collection_id)
    assert run.trigger == EvaluationRun.Trigger.REINDEX and run.ndcg10 == 1.0
    assert "nDCG@10 1.000" in out.getvalue()
