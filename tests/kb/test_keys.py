"""API keys managed by their owners and by admins: ``/api/v1/keys`` and the ``/settings/keys/`` page."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from access.models import ApiKey, AuditEvent, User
from access.services import SYSTEM, api_key_create
from kb.services import collection_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def team(settings, isolated_storage):
    settings.CAIRN_MODE = "team"


def keyed(user: User, **scope) -> tuple[APIClient, str]:
    key, secret = api_key_create(user=user, name="bootstrap", actor=SYSTEM, **scope)
    client = APIClient(REMOTE_ADDR="192.0.2.40")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client, key.prefix


def with_secret(secret: str) -> APIClient:
    client = APIClient(REMOTE_ADDR="192.0.2.41")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_owner_creates_lists_and_revokes_their_keys(team):
    alice = User.objects.create(username="alice")
    mine = collection_create(actor=SYSTEM, owner=alice, name="Mine")
    other = collection_create(actor=SYSTEM, owner=User.objects.create(username="carol"), name="Not mine")
    api, _ = keyed(alice)

    response = api.post("/api/v1/keys", {"name": "chat", "read_only": True, "collections": [mine.pk],
                                         "expires_in_days": 30}, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["secret"].startswith("cairn_") and created["read_only"] and created["collections"] == [mine.pk]
    assert created["expires_at"] and created["state"] == "active"
    listing = api.get("/api/v1/keys").json()["results"]
    assert {row["name"] for row in listing} == {"chat", "bootstrap"} and all("secret" not in row for row in listing)

    chat = with_secret(created["secret"])
    assert chat.get(f"/api/v1/collections/{mine.pk}").status_code == 200
    assert chat.post("/api/v1/collections", {"name": "x"}, format="json").status_code == 403  # read-only
    # A limited key cannot mint a broader one.
    assert chat.post("/api/v1/keys", {"name": "wider"}, format="json").status_code == 403

    # Collections must be readable by the creator; bad input is a 400, never a 500.
    assert api.post("/api/v1/keys", {"name": "x", "collections": [other.pk]}, format="json").status_code == 400
    assert api.post("/api/v1/keys", {"name": "x", "collections": [10**9]}, format="json").status_code == 400
    assert api.post("/api/v1/keys", {"name": ""}, format="json").status_code == 400
    assert api.post("/api/v1/keys", {"name": "x", "expires_in_days": 0}, format="json").status_code == 400
    assert api.post("/api/v1/keys", {"name": "x", "collections": "all"}, format="json").status_code == 400

    assert api.delete(f"/api/v1/keys/{created['prefix']}").status_code == 204
    assert chat.get(f"/api/v1/collections/{mine.pk}").status_code == 401  # the very next request
    assert AuditEvent.objects.filter(action="api_key.revoke", target_id=created["prefix"]).count() == 1
    assert [r["state"] for r in api.get("/api/v1/keys").json()["results"] if r["name"] == "chat"] == ["revoked"]


def test_someone_elses_key_is_a_404_but_an_admin_may_revoke_it(team):
    alice, bob = User.objects.create(username="alice"), User.objects.create(username="bob")
    admin = User.objects.create(username="root", role=User.Role.ADMIN)
    alice_api, alice_prefix = keyed(alice)
    bob_api, _ = keyed(bob)
    admin_api, _ = keyed(admin)
    assert bob_api.delete(f"/api/v1/keys/{alice_prefix}").status_code == 404
    assert bob_api.get("/api/v1/keys?all=1").status_code == 403
    assert alice_prefix not in {row["prefix"] for row in bob_api.get("/api/v1/keys").json()["results"]}
    everyone = admin_api.get("/api/v1/keys?all=1").json()["results"]
    assert {row["user"] for row in everyone} == {"alice", "bob", "root"}
    assert admin_api.delete(f"/api/v1/keys/{alice_prefix}").status_code == 204
    assert alice_api.get("/api/v1/keys").status_code == 401
    assert ApiKey.objects.get(prefix=alice_prefix).revoked_at is not None


def test_the_settings_page_creates_shows_once_and_revokes(team):
    alice = User.objects.create(username="alice")
    collection = collection_create(actor=SYSTEM, owner=alice, name="Handbook")
    browser = Client(REMOTE_ADDR="192.0.2.42", enforce_csrf_checks=False)
    browser.force_login(alice)
    page = browser.get("/settings/keys/")
    assert page.status_code == 200 and b"Handbook" in page.content and b"No keys yet" in page.content

    response = browser.post("/settings/keys/", {"action": "create", "name": "cherry studio", "read_only": "on",
                                                "collections": [str(collection.pk)], "expires_in_days": "7"})
    assert response.status_code == 201
    secret = response.content.decode().split('data-role="secret">')[1].split("<")[0]
    key = ApiKey.objects.get(user=alice, name="cherry studio")
    assert key.read_only and key.collection_ids == [collection.pk] and key.expires_at is not None
    assert with_secret(secret).get(f"/api/v1/collections/{collection.pk}").status_code == 200
    assert secret.encode() not in browser.get("/settings/keys/").content  # shown once

    bad = browser.post("/settings/keys/", {"action": "create", "name": "x", "expires_in_days": "-3"})
    assert bad.status_code == 400 and b"alert--error" in bad.content
    assert browser.post("/settings/keys/", {"action": "revoke", "prefix": "deadbeef"}).status_code == 404
    assert browser.post("/settings/keys/", {"action": "revoke", "prefix": key.prefix}).status_code == 200
    assert with_secret(secret).get(f"/api/v1/collections/{collection.pk}").status_code == 401


def test_the_settings_page_needs_a_csrf_token(team):
    alice = User.objects.create(username="alice")
    browser = Client(REMOTE_ADDR="192.0.2.43", enforce_csrf_checks=True)
    browser.force_login(alice)
    assert browser.post("/settings/keys/", {"action": "create", "name": "x"}).status_code == 403
    assert not ApiKey.objects.filter(user=alice).exists()
