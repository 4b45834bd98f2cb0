"""Every event the issue lists lands in the audit log with its fields, and no secret ever does.

Drives the real views and API (tasks inline, real parser, embedder and index).
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from access.models import AuditEvent, User
from access.services import SYSTEM, api_key_create
from tests.kb.conftest import upload

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple 42"
REMOTE = "10.20.30.40"  # not loopback: no personal-mode sign-in


def only(action: str, **fields) -> AuditEvent:
    events = list(AuditEvent.objects.filter(action=action, **fields))
    assert len(events) == 1, (action, fields, [(e.action, e.target_id) for e in events])
    return events[0]


def all_rows_text() -> str:
    return json.dumps(list(AuditEvent.objects.values()), default=str)


@pytest.fixture
def alice():
    return User.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def keyed(alice):
    _, secret = api_key_create(user=alice, name="ci", actor=SYSTEM)
    client = Client(REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client, secret


def test_login_logout_and_a_failed_login_are_logged_without_the_password(alice):
    browser = Client(REMOTE_ADDR=REMOTE)

    browser.post("/login/", {"username": "alice", "password": "wrong " + PASSWORD})
    browser.post("/login/", {"username": "alice", "password": PASSWORD}, HTTP_X_REQUEST_ID="req-login-000001")
    browser.post("/logout/")

    failed = only("auth.login_failed")
    assert failed.outcome == "denied" and failed.rule and failed.target_id == "alice" and failed.ip == REMOTE
    login = only("auth.login")
    assert (login.actor_id, login.ip, login.request_id, login.target_type, login.outcome) == (
        alice.pk, REMOTE, "req-login-000001", "user", "allowed")
    logout = only("auth.logout")
    assert logout.actor_id == alice.pk and logout.request_id
    assert PASSWORD not in all_rows_text()


def test_api_key_creation_and_use_are_logged_once_per_request_and_never_with_the_secret(alice, keyed):
    client, secret = keyed
    prefix = only("api_key.create").target_id

    client.get("/api/v1/collections", HTTP_X_REQUEST_ID="req-key-use-0001")
    client.get("/api/v1/collections")
    bad = Client(REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION=f"Bearer cairn_{prefix}_not-the-secret")
    assert bad.get("/api/v1/collections").status_code == 401

    uses = list(AuditEvent.objects.filter(action="api_key.use", outcome="allowed"))
    assert len(uses) == 2
    first = uses[0]
    assert (first.actor_id, first.api_key_prefix, first.ip, first.request_id, first.target_id) == (
        alice.pk, prefix, REMOTE, "req-key-use-0001", prefix)
    assert first.detail == {"method": "GET", "path": "/api/v1/collections"}
    refused = only("api_key.use", outcome="denied")
    assert refused.target_id == prefix and refused.actor_id is None and refused.rule
    text = all_rows_text()
    assert secret not in text and secret.split("_", 2)[2] not in text and "not-the-secret" not in text


def test_a_request_that_logs_its_own_event_under_a_key_writes_no_separate_key_use_row(alice, keyed):
    """A search records one event carrying the key's prefix; a second ``api_key.use`` row per call
    only doubled the audit writes (and the chain's contention) of every API request."""
    client, _ = keyed
    prefix = only("api_key.create").target_id
    collection = client.post("/api/v1/collections", {"name": "Ops"}, content_type="application/json",
                             HTTP_X_REQUEST_ID="req-create-0001")
    assert collection.status_code == 201
    assert client.get("/api/v1/search", {"q": "backup"}, HTTP_X_REQUEST_ID="req-search-0001").status_code == 200

    for request_id, action in (("req-create-0001", "collection.create"), ("req-search-0001", "kb.search")):
        rows = list(AuditEvent.objects.filter(request_id=request_id))
        assert [(e.action, e.api_key_prefix) for e in rows] == [(action, prefix)], request_id
    # A request that logs nothing of its own still records the key's use (see the test above).
    client.get("/api/v1/collections", HTTP_X_REQUEST_ID="req-list-00001")
    assert [e.action for e in AuditEvent.objects.filter(request_id="req-list-00001")] == ["api_key.use"]


def test_upload_replace_delete_search_and_ask_are_logged_with_the_chunks_served(alice, keyed, isolated_storage):
    client, secret = keyed
    collection = client.post("/api/v1/collections", {"name": "Ops"}, content_type="application/json").json()["id"]
    first = upload(client, collection, "runbook.md", b"# Runbook\n\nThe backup job runs at 02:00 every night.\n")
    assert first.status_code == 201, first.content
    doc = first.json()["id"]
    replaced = client.generic(
        "POST", f"/api/v1/documents/{doc}/versions",
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="runbook.md"\r\n\r\n'
        b"# Runbook\n\nThe backup job runs at 03:00 every night since May.\n\r\n--b0undary--\r\n",
        content_type="multipart/form-data; boundary=b0undary",
    )
    assert replaced.status_code == 201, replaced.content

    found = client.get("/api/v1/search", {"q": "backup job", "collection": collection}).json()["results"]
    answer = client.post("/api/v1/ask", {"question": "When does the backup job run?", "collection": collection},
                         content_type="application/json").json()
    assert client.delete(f"/api/v1/documents/{doc}").status_code == 204

    prefix = only("api_key.create").target_id
    for action in ("document.upload", "document.replace", "document.delete"):
        event = only(action, target_type="document", target_id=str(doc))
        assert event.actor_id == alice.pk and event.api_key_prefix == prefix and event.ip == REMOTE
        assert event.request_id and event.outcome == "allowed"
    assert only("document.replace").detail["version"] == 2
    search = only("kb.search")
    assert search.detail["chunks_served"] == [r["chunk_id"] for r in found] and found
    assert search.target_id == str(collection) and search.api_key_prefix == prefix
    ask = only("kb.ask")
    assert ask.detail["chunks_served"] == [p["chunk_id"] for p in answer["passages"]] and answer["passages"]
    assert secret not in all_rows_text()


def test_a_denied_access_is_a_404_and_a_denied_event(alice, keyed, isolated_storage):
    client, _ = keyed
    collection = client.post("/api/v1/collections", {"name": "Private"}, content_type="application/json").json()["id"]
    doc = upload(client, collection, "secret.md", b"# Plans\n\nThe launch is in March.\n").json()["id"]
    bob = User.objects.create_user("bob", password=PASSWORD)
    _, bob_secret = api_key_create(user=bob, name="bob", actor=SYSTEM)
    as_bob = Client(REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION=f"Bearer {bob_secret}")

    assert as_bob.get(f"/api/v1/documents/{doc}").status_code == 404
    assert as_bob.get("/api/v1/search", {"q": "launch", "collection": collection}).status_code == 404
    browser = Client(REMOTE_ADDR=REMOTE)
    browser.force_login(bob)
    assert browser.get(f"/documents/{doc}/").status_code == 404

    denials = list(AuditEvent.objects.filter(action="access.denied").order_by("id"))
    assert [(d.target_type, d.target_id) for d in denials] == [
        ("document", str(doc)), ("collection", str(collection)), ("document", str(doc))]
    assert all(d.actor_id == bob.pk and d.outcome == "denied" and d.rule and d.ip == REMOTE for d in denials)
    assert bob_secret not in all_rows_text()


def test_an_unauthenticated_api_call_is_refused_and_logged():
    response = Client(REMOTE_ADDR=REMOTE).get("/api/v1/collections")

    assert response.status_code in (401, 403)
    denial = only("access.denied", target_type="api")
    assert denial.actor_id is None and denial.ip == REMOTE and "NotAuthenticated" in denial.rule
    assert denial.detail == {"method": "GET", "path": "/api/v1/collections"}
