"""SCIM 2.0 provisioning at ``/scim/v2/``, checked by ``scim2-tester`` over HTTP and by the story an IdP plays.

``scim2-tester`` discovers what the server publishes and runs every check it
has (discovery, create, read, replace, PATCH add/replace/remove, delete,
attribute selection, unknown URLs) against a real server; none may fail.
Then the lifecycle an organisation relies on: a user created by SCIM, put in
a group that has a collection, finds it; deactivated, their session and key
stop on the next request; deleted, they are gone with their memberships.
"""

from __future__ import annotations

import secrets

import httpx2
import pytest
from django.contrib.auth.models import Group
from django.test import Client
from rest_framework.test import APIClient
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from access.administration import group_member_add
from access.models import AuditEvent, GroupMembership, Source, User
from access.services import SYSTEM, api_key_create
from kb.services import collection_create, collection_share

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = secrets.token_urlsafe(32)
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
def scim(settings):
    settings.CAIRN_MODE = "team"
    settings.CAIRN_SCIM_TOKEN = TOKEN
    client = APIClient(REMOTE_ADDR="192.0.2.30")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    return client


def send(client: APIClient, method: str, path: str, body: dict | None = None):
    kwargs = {"data": body, "format": "json"} if body is not None else {}
    response = getattr(client, method)(f"/scim/v2/{path}", **kwargs)
    assert response.status_code < 500, response.content
    assert response.status_code == 204 or response["Content-Type"].startswith("application/scim+json")
    return response.status_code, (response.json() if response.content else None)


def test_scim2_tester_finds_no_failed_check(live_server, settings):
    settings.CAIRN_MODE = "team"
    settings.CAIRN_SCIM_TOKEN = TOKEN
    http = httpx2.Client(base_url=f"{live_server.url}/scim/v2", headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=30)
    results = check_server(SyncSCIMClient(http))
    failed = [(r.title, r.resource_type, r.reason) for r in results if r.status in (Status.ERROR, Status.CRITICAL)]
    assert not failed, failed
    ran = {r.title for r in results if r.status == Status.SUCCESS}
    assert len(ran) >= 20, sorted(ran)  # the CRUD checks ran, not only discovery
    assert {"object_creation", "object_replacement", "check_add_attribute", "check_replace_attribute",
            "check_remove_attribute"} <= ran, sorted(ran)


def test_without_the_token_nothing_is_answered(settings):
    settings.CAIRN_MODE = "team"
    settings.CAIRN_SCIM_TOKEN = None
    anonymous = APIClient(REMOTE_ADDR="192.0.2.30")
    response = anonymous.get("/scim/v2/Users")
    assert response.status_code == 401 and response.json()["status"] == "401"
    settings.CAIRN_SCIM_TOKEN = TOKEN
    anonymous.credentials(HTTP_AUTHORIZATION="Bearer " + TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y"))
    assert anonymous.get("/scim/v2/Users").status_code == 401
    assert anonymous.post("/scim/v2/Users", {"userName": "mallory"}, format="json").status_code == 401
    assert not User.objects.filter(username="mallory").exists()
    assert AuditEvent.objects.filter(action="scim.auth", outcome=AuditEvent.Outcome.DENIED).count() == 3


def test_errors_use_the_scim_error_schema(scim):
    status, body = send(scim, "post", "Users", {"schemas": [USER], "userName": "ana"})
    assert status == 201
    status, body = send(scim, "post", "Users", {"schemas": [USER], "userName": "ANA"})
    assert status == 409 and body["scimType"] == "uniqueness", body
    status, body = send(scim, "post", "Users", {"schemas": [USER]})
    assert status == 400, body
    status, body = send(scim, "post", "Users", {"schemas": [USER], "userName": "bad name!"})
    assert status == 400 and body["scimType"] == "invalidValue", body
    status, body = send(scim, "post", "Users", {"schemas": [USER], "userName": "ed", "emails": [{"value": "nope"}]})
    assert status == 400, body
    status, body = send(scim, "get", "Users/999999")
    assert status == 404 and body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    status, body = send(scim, "get", "Users/abc")
    assert status == 404
    status, body = send(scim, "get", "Users?filter=userName%20eq")
    assert status == 400 and body["scimType"] == "invalidFilter", body
    status, body = send(scim, "post", "Groups", {"schemas": [GROUP], "displayName": "g",
                                                 "members": [{"value": "424242"}]})
    assert status == 400, body
    response = scim.generic("POST", "/scim/v2/Users", b"{not json", content_type="application/scim+json")
    assert response.status_code == 400
    response = scim.generic("POST", "/scim/v2/Users", b"x" * (1024 * 1024 + 1), content_type="application/scim+json")
    assert response.status_code == 413


def test_filter_and_pagination(scim):
    for index in range(5):
        send(scim, "post", "Users", {"schemas": [USER], "userName": f"user{index}", "externalId": f"ext-{index}",
                                     "active": index % 2 == 0})
    status, body = send(scim, "get", 'Users?filter=userName%20eq%20%22USER3%22')
    assert body["totalResults"] == 1 and body["Resources"][0]["userName"] == "user3"
    status, body = send(scim, "get", 'Users?filter=externalId%20eq%20%22ext-4%22')
    assert [r["userName"] for r in body["Resources"]] == ["user4"]
    status, body = send(scim, "get", 'Users?filter=active%20eq%20false%20and%20userName%20sw%20%22user%22')
    assert sorted(r["userName"] for r in body["Resources"]) == ["user1", "user3"]
    status, body = send(scim, "get", "Users?startIndex=2&count=2")
    assert body["startIndex"] == 2 and body["itemsPerPage"] == 2 and body["totalResults"] == 5
    assert [r["userName"] for r in body["Resources"]] == ["user1", "user2"]
    status, body = send(scim, "get", "Users?count=1&attributes=userName")
    assert set(body["Resources"][0]) <= {"schemas", "id", "userName"}, body


def test_the_lifecycle_an_identity_provider_drives(scim):
    owner = User.objects.create(username="owner")
    collection = collection_create(actor=SYSTEM, owner=owner, name="Plant manuals")

    # Created by SCIM, put in a group by SCIM, which an owner shares the collection with.
    status, user = send(scim, "post", "Users", {
        "schemas": [USER, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"], "userName": "li.wei",
        "name": {"givenName": "Wei", "familyName": "Li"}, "emails": [{"value": "li.wei@example.cn", "primary": True}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "maintenance"}})
    assert status == 201, user
    status, group = send(scim, "post", "Groups", {"schemas": [GROUP], "displayName": "maintenance",
                                                  "members": [{"value": user["id"]}]})
    assert status == 201 and group["members"][0]["value"] == user["id"], group
    collection_share(actor=SYSTEM, collection=collection, principal=Group.objects.get(pk=group["id"]), role="viewer")
    person = User.objects.get(pk=user["id"])
    assert person.attributes == {"department": "maintenance"} and person.attribute_sources == {"department": "scim"}
    assert not person.has_usable_password()

    # An admin also puts them in a second group; SCIM never touches that membership.
    admin_group = Group.objects.create(name="night-shift")
    group_member_add(actor=SYSTEM, group=admin_group, user=person)

    # They sign in (a session, as after an OIDC sign-in) and have a key; both see the collection.
    browser = Client(REMOTE_ADDR="192.0.2.31")
    browser.force_login(person)
    assert browser.get(f"/api/v1/collections/{collection.pk}").status_code == 200
    _, secret = api_key_create(actor=SYSTEM, user=person, name="laptop")
    keyed = APIClient(REMOTE_ADDR="192.0.2.32")
    keyed.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert keyed.get(f"/api/v1/collections/{collection.pk}").status_code == 200

    # Removed from the group by PATCH: access ends on the next request; the admin's membership stays.
    status, body = send(scim, "patch", f"Groups/{group['id']}", {
        "schemas": [PATCH], "Operations": [{"op": "remove", "path": f'members[value eq "{user["id"]}"]'}]})
    assert status == 200 and not body.get("members"), body
    assert keyed.get(f"/api/v1/collections/{collection.pk}").status_code == 404
    assert set(person.groups.values_list("name", flat=True)) == {"night-shift"}
    status, body = send(scim, "patch", f"Groups/{group['id']}", {
        "schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}]})
    assert keyed.get(f"/api/v1/collections/{collection.pk}").status_code == 200

    # Deactivated: session, key — all stop on the next request.
    status, body = send(scim, "patch", f"Users/{user['id']}", {
        "schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]})
    assert status == 200 and body["active"] is False
    assert keyed.get(f"/api/v1/collections/{collection.pk}").status_code == 401
    assert browser.get(f"/api/v1/collections/{collection.pk}").status_code in (401, 403)
    assert AuditEvent.objects.filter(action="user.deactivate", target_id=str(user["id"])).exists()
    # Reactivated, the key works again (it was stopped, not revoked).
    send(scim, "patch", f"Users/{user['id']}", {"schemas": [PATCH],
                                                "Operations": [{"op": "replace", "path": "active", "value": True}]})
    assert keyed.get(f"/api/v1/collections/{collection.pk}").status_code == 200

    # Deleted: gone for SCIM, memberships of every channel dropped, keys revoked; the row keeps what it owns.
    status, _ = send(scim, "delete", f"Users/{user['id']}")
    assert status == 204
    assert send(scim, "get", f"Users/{user['id']}")[0] == 404
    assert keyed.get(f"/api/v1/collections/{collection.pk}").status_code == 401
    person.refresh_from_db()
    assert not person.is_active and person.deprovisioned_at is not None
    assert not GroupMembership.objects.filter(user=person).exists() and not person.groups.exists()
    assert person.api_keys.filter(revoked_at__isnull=True).count() == 0
    status, body = send(scim, "get", f"Groups/{group['id']}")
    assert not body.get("members")

    # Re-created later (the same person back): the same row, active, without the old memberships or keys.
    status, again = send(scim, "post", "Users", {"schemas": [USER], "userName": "li.wei"})
    assert status == 201 and again["id"] == user["id"] and again.get("active", True) is True
    assert keyed.get(f"/api/v1/collections/{collection.pk}").status_code == 401


def test_scim_owns_only_its_memberships_and_attributes(scim):
    status, user = send(scim, "post", "Users", {"schemas": [USER], "userName": "mei"})
    person = User.objects.get(pk=user["id"])
    admin_group = Group.objects.create(name="auditors")
    group_member_add(actor=SYSTEM, group=admin_group, user=person)
    from access.administration import user_attributes_set
    user_attributes_set(actor=SYSTEM, user=person, attributes={"clearance": "secret", "department": "audit"})
    # SCIM adds the admin's group as its own too, then withdraws it: the admin's membership holds.
    send(scim, "patch", f"Groups/{admin_group.pk}", {
        "schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}]})
    assert set(GroupMembership.objects.filter(user=person).values_list("source", flat=True)) == {
        Source.ADMIN, Source.SCIM}
    send(scim, "put", f"Groups/{admin_group.pk}", {"schemas": [GROUP], "displayName": "auditors", "members": []})
    assert person.groups.filter(pk=admin_group.pk).exists()
    # The enterprise department SCIM sends does not overwrite the one the admin set.
    send(scim, "put", f"Users/{user['id']}", {
        "schemas": [USER, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"], "userName": "mei",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "sales"}})
    person.refresh_from_db()
    assert person.attributes == {"clearance": "secret", "department": "audit"}
