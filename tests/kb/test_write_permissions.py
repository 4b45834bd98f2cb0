"""The write paths never reach past what the caller may read or own (issue 11, holes 1–3).

Team-style users with API keys, real uploads through the REST API (inline
ingestion with the real embedder), real grants and policies.
"""

from __future__ import annotations

import pytest

from access.models import AuditEvent, User
from tests.kb.conftest import upload
from tests.kb.permission_corpus import one_torch_thread  # noqa: F401
from tests.kb.test_api_permissions import client_for

pytestmark = pytest.mark.django_db(transaction=True)

PLANS = b"The merger with Northwind closes on the first of March; the price is forty million."
OTHER = b"Quarterly plans: repaint the loading bay and replace the forklift batteries."


@pytest.fixture
def hidden_from_editor(isolated_storage, one_torch_thread):  # noqa: F811 (a fixture)
    """Alice's collection; Bob edits it, but a policy hides the secret document ``plans.txt`` from him."""
    alice, bob = client_for("alice"), client_for("bob")
    User.objects.filter(username="alice").update(attributes={"clearance": "secret"})
    User.objects.filter(username="bob").update(attributes={"clearance": "internal"})
    collection = alice.post("/api/v1/collections", {"name": "Board"}, format="json").json()["id"]
    secret = upload(alice, collection, "plans.txt", PLANS).json()
    assert alice.put(f"/api/v1/documents/{secret['id']}/attributes", {"attributes": {"sensitivity": "secret"}},
                     format="json").status_code == 200
    assert alice.put(f"/api/v1/collections/{collection}/policy",
                     {"policy": 'user.clearance >= doc.sensitivity'}, format="json").status_code == 200
    assert alice.post(f"/api/v1/collections/{collection}/members", {"user": "bob", "role": "editor"},
                      format="json").status_code == 200
    assert bob.get(f"/api/v1/documents/{secret['id']}").status_code == 404
    return alice, bob, collection, secret


def test_an_upload_named_like_a_hidden_document_becomes_a_new_document(hidden_from_editor):
    alice, bob, collection, secret = hidden_from_editor

    response = upload(bob, collection, "plans.txt", OTHER)

    assert response.status_code == 201, response.content
    mine = response.json()
    assert mine["id"] != secret["id"] and mine["version"] == 1
    # Alice's document is untouched: still one version, her text.
    theirs = alice.get(f"/api/v1/documents/{secret['id']}").json()
    assert theirs["version"] == 1 and theirs["sha256"] == secret["sha256"]
    assert not AuditEvent.objects.filter(action="document.replace").exists()


def test_an_upload_of_a_hidden_documents_bytes_does_not_reveal_it(hidden_from_editor):
    _, bob, collection, secret = hidden_from_editor

    response = upload(bob, collection, "copy.txt", PLANS)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"] != secret["id"] and body["duplicate"] is False and body["title"] == "copy.txt"


def test_an_upload_still_finds_a_readable_document_by_name_and_by_bytes(hidden_from_editor):
    alice, _, collection, _ = hidden_from_editor
    first = upload(alice, collection, "rota.txt", OTHER).json()
    alice.put(f"/api/v1/documents/{first['id']}/attributes", {"attributes": {"sensitivity": "public"}},
              format="json")

    assert upload(alice, collection, "rota.txt", OTHER).json()["duplicate"] is True
    again = upload(alice, collection, "rota.txt", OTHER + b" Also the fire doors.")
    assert again.status_code == 201 and again.json()["id"] == first["id"] and again.json()["version"] == 2


def test_only_owners_read_a_collections_policy(hidden_from_editor):
    alice, bob, collection, _ = hidden_from_editor
    viewer = client_for("carol")
    alice.post(f"/api/v1/collections/{collection}/members", {"user": "carol", "role": "viewer"}, format="json")

    assert alice.get(f"/api/v1/collections/{collection}/policy").json()["policy"]
    for reader in (bob, viewer):
        response = reader.get(f"/api/v1/collections/{collection}/policy")
        assert response.status_code == 403 and "owner" in response.json()["error"]["message"]


def test_the_creators_rights_cannot_be_unshared_or_changed(hidden_from_editor):
    alice, _, collection, _ = hidden_from_editor
    co_owner = client_for("dave")
    alice.post(f"/api/v1/collections/{collection}/members", {"user": "dave", "role": "owner"}, format="json")

    response = co_owner.delete(f"/api/v1/collections/{collection}/members/user/alice")
    assert response.status_code == 400 and "created this collection" in response.json()["error"]["message"]
    response = co_owner.post(f"/api/v1/collections/{collection}/members", {"user": "alice", "role": "viewer"},
                             format="json")
    assert response.status_code == 400 and "owner already holds every right" in str(response.json())
    assert alice.get(f"/api/v1/collections/{collection}/members").status_code == 200
    assert not AuditEvent.objects.filter(action="collection.unshare").exists()
