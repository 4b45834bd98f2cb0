"""A policy's effect shown before it is saved; one that hides everything from its owner needs confirming."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from rest_framework.test import APIClient

from access.administration import group_member_add, user_attributes_set
from access.models import AuditEvent, User
from access.services import SYSTEM, api_key_create
from tests.kb.conftest import upload
from tests.kb.permission_corpus import one_torch_thread  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)
POLICY = "user.department == doc.department"


def client_for(user: User) -> APIClient:
    _, secret = api_key_create(user=user, name="tests", actor=SYSTEM)
    client = APIClient(REMOTE_ADDR="192.0.2.90")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def setup(settings, isolated_storage, one_torch_thread):  # noqa: F811 (a fixture)
    settings.CAIRN_MODE = "team"
    alice, bob, carol = (User.objects.create(username=name) for name in ("alice", "bob", "carol"))
    user_attributes_set(actor=SYSTEM, user=bob, attributes={"department": "finance"})
    user_attributes_set(actor=SYSTEM, user=carol, attributes={"department": "ops"})
    ops = Group.objects.create(name="ops")
    group_member_add(actor=SYSTEM, group=ops, user=carol)
    api = client_for(alice)
    collection = api.post("/api/v1/collections", {"name": "Budgets"}, format="json").json()["id"]
    finance = upload(api, collection, "budget.txt", b"The finance budget for next year is 4 million.").json()
    upload(api, collection, "menu.txt", b"The canteen serves soup on Fridays.")
    assert api.put(f"/api/v1/documents/{finance['id']}/attributes", {"attributes": {"department": "finance"}},
                   format="json").status_code == 200
    for body in ({"user": "bob", "role": "viewer"}, {"group": "ops", "role": "viewer"}):
        assert api.post(f"/api/v1/collections/{collection}/members", body, format="json").status_code == 200
    return api, alice, collection


def test_the_preview_says_who_would_see_what_and_saves_nothing(setup):
    api, alice, collection = setup
    response = api.post(f"/api/v1/collections/{collection}/policy/preview", {"policy": POLICY}, format="json")
    assert response.status_code == 200, response.content
    effect = response.json()
    assert effect["total"] == 2 and effect["you"] == {"before": 2, "after": 0}
    assert effect["hides_everything_from_you"] is True
    rows = {row["user"]: row for row in effect["people"]}
    assert rows["bob"]["after"] == 1 and rows["carol"]["after"] == 0 and rows["carol"]["via"] == "group ops"
    assert {row["user"] for row in effect["losing"]} == {"alice", "bob", "carol"}
    assert api.get(f"/api/v1/collections/{collection}/policy").json()["policy"] == ""
    assert not AuditEvent.objects.filter(action="policy.set").exists()  # the trial save was rolled back
    bad = api.post(f"/api/v1/collections/{collection}/policy/preview", {"policy": "user.x =="}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_policy"
    bob = client_for(User.objects.get(username="bob"))
    assert bob.post(f"/api/v1/collections/{collection}/policy/preview", {"policy": POLICY},
                    format="json").status_code == 403  # a viewer: sees the collection, not its policy


def test_hiding_everything_from_yourself_needs_confirming_and_the_page_says_why_it_is_empty(setup):
    api, alice, collection = setup
    refused = api.put(f"/api/v1/collections/{collection}/policy", {"policy": POLICY}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "confirm_required"
    assert refused.json()["error"]["details"]["you"]["after"] == 0
    assert api.get(f"/api/v1/collections/{collection}/policy").json()["policy"] == ""
    saved = api.put(f"/api/v1/collections/{collection}/policy", {"policy": POLICY, "confirm": True}, format="json")
    assert saved.status_code == 200 and saved.json()["policy"] == POLICY
    browser = Client(REMOTE_ADDR="192.0.2.91")
    browser.force_login(alice)
    page = browser.get(f"/collections/{collection}/").content.decode()
    assert "2 documents are hidden from you by this collection" in page
    assert 'id="documents-empty"' in page and "is-hidden" in page.split('id="documents-empty"')[0][-60:]
