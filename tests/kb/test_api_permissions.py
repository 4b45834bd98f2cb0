"""Sharing, policies and cross-user isolation through the REST API, with API keys (team-style users).

Real uploads (inline ingestion with the real embedder), real guardian
grants, real audit rows.  Runs on SQLite here and on PostgreSQL through
tests/access/test_postgres.py.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from access.models import AuditEvent, User
from access.services import SYSTEM, api_key_create
from tests.kb.conftest import upload
from tests.kb.permission_corpus import one_torch_thread  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = b"The launch code for project heron is kept in the blue safe on floor nine."
PUBLIC = b"The canteen opens at noon and serves soup on Fridays."


def client_for(username: str, role: str = User.Role.MEMBER) -> APIClient:
    user = User.objects.create(username=username, role=role)
    _, secret = api_key_create(user=user, name="tests", actor=SYSTEM)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    client.user = user  # type: ignore[attr-defined]
    return client


@pytest.fixture
def people(isolated_storage, one_torch_thread):  # noqa: F811 (a fixture)
    return client_for("alice"), client_for("bob"), client_for("root", role=User.Role.ADMIN)


@pytest.fixture
def alice_doc(people):
    alice, _, _ = people
    collection = alice.post("/api/v1/collections", {"name": "Alice private"}, format="json").json()["id"]
    response = upload(alice, collection, "heron.txt", SECRET)
    assert response.status_code == 201, response.content
    document = response.json()
    assert document["status"] == "INDEXED"
    chunk = alice.get("/api/v1/search", {"q": "launch code heron"}).json()["results"][0]["chunk_id"]
    return collection, document["id"], chunk


def denials(user: User) -> int:
    return AuditEvent.objects.filter(actor_id=user.pk, outcome=AuditEvent.Outcome.DENIED).count()


def search_hits(client: APIClient, query: str, **params) -> list[int]:
    response = client.get("/api/v1/search", {"q": query, **params})
    assert response.status_code == 200, response.content
    return [r["document_id"] for r in response.json()["results"]]


def test_user_b_cannot_reach_user_a_private_document_by_any_id(people, alice_doc):
    alice, bob, _ = people
    collection, document, chunk = alice_doc
    attempts = [
        ("get", f"/api/v1/documents/{document}", None),
        ("get", f"/api/v1/documents/{document}/download", None),
        ("get", f"/api/v1/documents/{document}/attributes", None),
        ("get", f"/api/v1/chunks/{chunk}", None),
        ("delete", f"/api/v1/documents/{document}", None),
        ("post", f"/api/v1/documents/{document}/reprocess", None),
        ("get", f"/api/v1/collections/{collection}", None),
        ("get", f"/api/v1/collections/{collection}/documents", None),
        ("delete", f"/api/v1/collections/{collection}", None),
        ("get", f"/api/v1/collections/{collection}/members", None),
        ("post", f"/api/v1/collections/{collection}/members", {"user": "bob", "role": "owner"}),
        ("put", f"/api/v1/collections/{collection}/policy", {"policy": 'doc.a == "b"'}),
        ("get", "/api/v1/search", {"q": "launch code", "collection": collection}),
        ("get", "/api/v1/search", {"q": "launch code", "document": document}),     # attach by id
        ("post", "/api/v1/ask", {"question": "What is the launch code?", "collection": collection}),
        ("post", "/api/v1/ask", {"question": "What is the launch code?", "documents": [document]}),
    ]
    for method, path, body in attempts:
        before = denials(bob.user)
        if method == "get":
            response = bob.get(path, body)
        else:
            response = getattr(bob, method)(path, body, format="json")
        assert response.status_code == 404, (method, path, response.status_code, response.content)
        assert response.json()["error"]["code"] == "not_found"
        assert denials(bob.user) == before + 1, (method, path)
    # Uploading into, or replacing a version of, A's document: 404 too.
    assert upload(bob, collection, "mine.txt", b"bob was here").status_code == 404
    # Without naming anything, B's search and ask never surface A's passages.
    assert search_hits(bob, "launch code heron blue safe") == []
    answer = bob.post("/api/v1/ask", {"question": "What is the launch code for heron?"}, format="json").json()
    assert answer["citations"] == [] and "blue safe" not in answer["answer"]
    # And A still has everything.
    assert alice.get(f"/api/v1/documents/{document}").status_code == 200
    assert search_hits(alice, "launch code heron") == [document]


def test_a_viewer_reads_but_gets_403_for_changes_and_an_editor_may_change(people, alice_doc):
    alice, bob, _ = people
    collection, document, _ = alice_doc
    response = alice.post(f"/api/v1/collections/{collection}/members", {"user": "bob", "role": "viewer"},
                          format="json")
    assert response.status_code == 200, response.content
    assert {"kind": "user", "name": "bob", "role": "viewer", "implicit": False} in response.json()["results"]

    assert bob.get(f"/api/v1/documents/{document}").status_code == 200
    assert bob.get(f"/api/v1/documents/{document}/download").status_code == 200
    assert search_hits(bob, "launch code heron") == [document]
    before = denials(bob.user)
    assert bob.delete(f"/api/v1/documents/{document}").status_code == 403
    assert denials(bob.user) == before + 1  # a refused change is a denied event too
    assert upload(bob, collection, "extra.txt", PUBLIC).status_code == 403
    assert bob.put(f"/api/v1/documents/{document}/attributes", {"attributes": {"a": "b"}},
                   format="json").status_code == 403
    assert bob.post(f"/api/v1/collections/{collection}/members", {"user": "bob", "role": "owner"},
                    format="json").status_code == 403  # a viewer cannot promote himself

    alice.post(f"/api/v1/collections/{collection}/members", {"user": "bob", "role": "editor"}, format="json")
    assert upload(bob, collection, "extra.txt", PUBLIC).status_code == 201
    assert bob.delete(f"/api/v1/collections/{collection}").status_code == 403  # owners only
    assert bob.delete(f"/api/v1/documents/{document}").status_code == 204

    actions = list(AuditEvent.objects.filter(action="collection.share").values_list("detail", flat=True))
    assert [d["role"] for d in actions] == ["viewer", "editor"]


def test_revoking_group_membership_hides_the_document_on_the_very_next_search(people, alice_doc):
    alice, bob, root = people
    collection, document, _ = alice_doc
    assert root.post("/api/v1/admin/groups", {"name": "heron-team"}, format="json").status_code == 201
    assert root.post("/api/v1/admin/groups/heron-team/members", {"user": "bob"}, format="json").status_code == 200
    assert alice.post(f"/api/v1/collections/{collection}/members", {"group": "heron-team", "role": "viewer"},
                      format="json").status_code == 200
    assert search_hits(bob, "launch code heron") == [document]

    assert root.delete("/api/v1/admin/groups/heron-team/members/bob").status_code == 204

    assert search_hits(bob, "launch code heron") == []
    assert bob.get(f"/api/v1/documents/{document}").status_code == 404
    assert AuditEvent.objects.filter(action="group.member_remove").count() == 1


def test_unsharing_takes_effect_at_once_and_is_audited(people, alice_doc):
    alice, bob, _ = people
    collection, document, _ = alice_doc
    alice.post(f"/api/v1/collections/{collection}/members", {"user": "bob", "role": "viewer"}, format="json")
    assert search_hits(bob, "launch code heron") == [document]
    assert alice.delete(f"/api/v1/collections/{collection}/members/user/bob").status_code == 204
    assert search_hits(bob, "launch code heron") == []
    event = AuditEvent.objects.filter(action="collection.unshare").get()
    assert event.actor_id == alice.user.pk and event.detail["username"] == "bob"


def test_policies_and_attributes_decide_per_document(people, alice_doc):
    alice, bob, root = people
    collection, secret_doc, _ = alice_doc
    public_doc = upload(alice, collection, "canteen.txt", PUBLIC).json()["id"]
    alice.post(f"/api/v1/collections/{collection}/members", {"user": "bob", "role": "viewer"}, format="json")
    for doc, level in ((secret_doc, "secret"), (public_doc, "public")):
        response = alice.put(f"/api/v1/documents/{doc}/attributes",
                             {"attributes": {"sensitivity": level, "department": "research"}}, format="json")
        assert response.status_code == 200, response.content

    bad = alice.put(f"/api/v1/collections/{collection}/policy",
                    {"policy": "user.clearance >= doc.sensitivity and"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_policy" and bad.json()["error"]["details"]["column"] == 38
    policy = 'user.clearance >= doc.sensitivity or doc.sensitivity == "public"'
    assert alice.put(f"/api/v1/collections/{collection}/policy", {"policy": policy},
                     format="json").status_code == 200

    assert set(search_hits(bob, "launch code canteen soup")) == {public_doc}
    event = AuditEvent.objects.filter(action="kb.search", actor_id=bob.user.pk).last()
    assert f"abac: collection:{collection}" in event.rule and event.detail["chunks_served"]
    assert bob.get(f"/api/v1/documents/{secret_doc}").status_code == 404
    listed = bob.get(f"/api/v1/collections/{collection}/documents").json()["results"]
    assert [d["id"] for d in listed] == [public_doc]

    # Only an admin sets user attributes; the next request sees them.
    assert bob.put("/api/v1/admin/users/bob", {"attributes": {"clearance": "secret"}},
                   format="json").status_code == 403
    response = root.put("/api/v1/admin/users/bob", {"attributes": {"clearance": "secret"}}, format="json")
    assert response.status_code == 200, response.content
    assert set(search_hits(bob, "launch code canteen soup")) == {public_doc, secret_doc}
    assert root.put("/api/v1/admin/users/bob", {"attributes": {"clearance": "top"}},
                    format="json").status_code == 400

    # A platform policy applies on top of the collection's (both must allow).
    assert root.put("/api/v1/admin/policy", {"policy": 'user.department == doc.department'},
                    format="json").status_code == 200
    assert search_hits(bob, "launch code canteen soup") == []
    assert set(search_hits(alice, "launch code canteen soup")) == set()  # the owner has no department either

    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"policy.set", "document.attributes", "user.attributes", "collection.share"} <= actions


def test_personal_mode_owner_uses_the_same_path(api, collection_id):
    """The loopback owner ("me") owns what it creates; sharing endpoints work for it too."""
    response = upload(api, collection_id, "note.txt", PUBLIC)
    assert response.status_code == 201
    assert api.get(f"/api/v1/collections/{collection_id}/members").json()["results"] == [
        {"kind": "user", "name": "me", "role": "owner", "implicit": True}
    ]
    # It would hide the only (unlabelled) document from its owner: refused until confirmed.
    assert api.put(f"/api/v1/collections/{collection_id}/policy", {"policy": 'doc.sensitivity == "public"'},
                   format="json").status_code == 409
    assert api.put(f"/api/v1/collections/{collection_id}/policy", {"policy": 'doc.sensitivity == "public"',
                                                                   "confirm": True}, format="json").status_code == 200
    assert api.get("/api/v1/search", {"q": "canteen soup"}).json()["results"] == []  # unlabelled: denied
    api.put(f"/api/v1/documents/{response.json()['id']}/attributes", {"attributes": {"sensitivity": "public"}},
            format="json")
    assert len(api.get("/api/v1/search", {"q": "canteen soup"}).json()["results"]) == 1
