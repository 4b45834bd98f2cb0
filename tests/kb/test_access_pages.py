"""The permission pages: admins set the platform policy (previewed, confirmed), user attributes and groups;
editors label documents; everyone else gets 404 or 403, and every change is audited."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from access.administration import group_member_add, membership_add, user_attributes_set
from access.models import AuditEvent, GroupRecord, Policy, Source, User
from access.selectors import policy_source
from access.services import SYSTEM
from kb import attribute_forms, selectors, services
from kb.exceptions import InvalidInput
from tests.kb.conftest import upload
from tests.kb.permission_corpus import one_torch_thread  # noqa: F401
from tests.kb.test_policy_preview import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def browser(user: User) -> Client:
    client = Client(REMOTE_ADDR="10.0.0.5")  # not loopback: no personal-mode sign-in
    client.force_login(user)
    return client


@pytest.fixture
def team(settings, isolated_storage, one_torch_thread):  # noqa: F811 (a fixture)
    settings.CAIRN_MODE = "team"
    admin = User.objects.create(username="ada", role=User.Role.ADMIN)
    owner = User.objects.create(username="olga")
    viewer = User.objects.create(username="vic")
    api = client_for(owner)
    collection = api.post("/api/v1/collections", {"name": "Plans"}, format="json").json()["id"]
    document = upload(
        api, collection, "budget.txt", b"The harbour budget for next year is four million."
    ).json()
    assert (
        api.post(
            f"/api/v1/collections/{collection}/members",
            {"user": "vic", "role": "viewer"},
            format="json",
        ).status_code
        == 200
    )
    return admin, owner, viewer, collection, document["id"]


# --- form rows ---------------------------------------------------------------------------------------------


def test_form_rows_become_typed_attributes_and_back():
    attributes = attribute_forms.attributes_from_rows(
        ["department", "level", "regions", "codes", ""],
        ["text", "number", "text-list", "number-list", "text"],
        [" hr ", "3", "north, south,", "1, 2.5", ""],
    )
    assert attributes == {
        "department": "hr",
        "level": 3,
        "regions": ["north", "south"],
        "codes": [1, 2.5],
    }
    rows = attribute_forms.rows_from_attributes(attributes, blank=1)
    assert [(r.name, r.type, r.value) for r in rows] == [
        ("codes", "number-list", "1, 2.5"),
        ("department", "text", "hr"),
        ("level", "number", "3"),
        ("regions", "text-list", "north, south"),
        ("", "text", ""),
    ]


@pytest.mark.parametrize(
    ("names", "types", "values", "message"),
    [
        (["level"], ["number"], ["three"], "not a number"),
        (["level"], ["number"], ["inf"], "finite"),
        ([""], ["text"], ["orphan"], "no name"),
        (["a", "a"], ["text", "text"], ["1", "2"], "twice"),
        (["a"], ["text"], [""], "no value"),
        (["a"], ["bogus"], ["x"], "choose a type"),
        (["a", "b"], ["text"], ["x"], "incomplete"),
    ],
)
def test_form_rows_that_make_no_sense_are_refused_with_a_reason(names, types, values, message):
    with pytest.raises(InvalidInput, match=message):
        attribute_forms.attributes_from_rows(names, types, values)


# --- who may open the admin pages -----------------------------------------------------------------------------


def test_only_a_platform_admin_sees_the_access_pages_and_the_attempt_is_logged(team):
    admin, owner, *_ = team
    assert browser(owner).get("/settings/access/").status_code == 404
    assert browser(owner).get("/settings/access/users/vic/").status_code == 404
    assert (
        browser(owner)
        .post("/settings/access/", {"action": "group-create", "name": "x"})
        .status_code
        == 404
    )
    assert not Group.objects.filter(name="x").exists()
    assert AuditEvent.objects.filter(action="access.denied", target_type="admin_page").count() == 3
    page = browser(admin).get("/settings/access/")
    html = page.content.decode()
    assert page.status_code == 200 and 'data-role="groups"' in html and 'data-user="vic"' in html
    assert 'data-role="nav-access"' in html
    assert 'data-role="nav-access"' not in browser(owner).get("/").content.decode()


def test_personal_mode_shows_the_policy_and_your_attributes_but_no_people_or_groups(team, settings):
    admin, *_ = team
    settings.CAIRN_MODE = "personal"
    html = browser(admin).get("/settings/access/").content.decode()
    assert 'data-role="platform-policy"' in html and 'data-role="my-attributes"' in html
    assert 'data-role="groups"' not in html and 'data-role="users"' not in html
    assert browser(admin).get("/settings/access/users/vic/").status_code == 404
    assert (
        browser(admin)
        .post("/settings/access/", {"action": "group-create", "name": "x"})
        .status_code
        == 400
    )


# --- the platform policy --------------------------------------------------------------------------------------


def test_the_platform_policy_is_previewed_and_needs_confirming_when_it_hides_everything_from_the_saver(
    team,
):
    admin, owner, *_ = team
    page = browser(owner)  # the owner reads the document; make them an admin for this test
    owner.role = User.Role.ADMIN
    owner.save(update_fields=["role"])
    policy = "user.clearance >= doc.sensitivity"

    preview = page.post("/settings/access/", {"action": "policy-preview", "policy": policy})
    html = preview.content.decode()
    assert (
        preview.status_code == 200
        and 'data-role="hides-everything"' in html
        and "0 of 1 document" in html
    )
    assert policy_source(Policy.PLATFORM) == ""

    refused = page.post("/settings/access/", {"action": "policy-save", "policy": policy})
    assert refused.status_code == 409 and 'data-role="confirm-required"' in refused.content.decode()
    assert (
        policy_source(Policy.PLATFORM) == ""
        and not AuditEvent.objects.filter(action="policy.set").exists()
    )

    saved = page.post(
        "/settings/access/", {"action": "policy-save", "policy": policy, "confirm": "yes"}
    )
    assert saved.status_code == 302 and policy_source(Policy.PLATFORM) == policy
    assert AuditEvent.objects.filter(
        action="policy.set", target_id="platform", actor=owner
    ).exists()
    assert selectors.readable_documents(owner).count() == 0

    bad = page.post("/settings/access/", {"action": "policy-save", "policy": "user.x =="})
    assert bad.status_code == 400 and "not valid" in bad.content.decode()
    assert (
        page.post("/settings/access/", {"action": "policy-save", "policy": ""}).status_code == 302
    )
    assert policy_source(Policy.PLATFORM) == ""


def test_the_platform_policy_api_previews_and_refuses_an_unconfirmed_lockout(team):
    admin, owner, *_ = team
    owner.role = User.Role.ADMIN
    owner.save(update_fields=["role"])
    api = client_for(owner)
    effect = api.post(
        "/api/v1/admin/policy/preview", {"policy": 'doc.sensitivity == "secret"'}, format="json"
    )
    assert effect.status_code == 200 and effect.json()["you"] == {"before": 1, "after": 0}
    assert {row["user"] for row in effect.json()["losing"]} == {"olga", "vic"}
    put = api.put("/api/v1/admin/policy", {"policy": 'doc.sensitivity == "secret"'}, format="json")
    assert put.status_code == 409 and put.json()["error"]["code"] == "confirm_required"
    assert (
        api.put(
            "/api/v1/admin/policy",
            {"policy": 'doc.sensitivity == "secret"', "confirm": True},
            format="json",
        ).status_code
        == 200
    )
    assert (
        client_for(User.objects.get(username="vic"))
        .post("/api/v1/admin/policy/preview", {"policy": ""}, format="json")
        .status_code
        == 403
    )


# --- groups ---------------------------------------------------------------------------------------------------


def test_an_admin_creates_fills_empties_and_deletes_a_group_and_its_grants_go_with_it(team):
    admin, owner, viewer, collection, _ = team
    page = browser(admin)
    assert (
        page.post("/settings/access/", {"action": "group-create", "name": "auditors"}).status_code
        == 302
    )
    assert (
        page.post(
            "/settings/access/", {"action": "member-add", "group": "auditors", "user": "vic"}
        ).status_code
        == 302
    )
    group = Group.objects.get(name="auditors")
    assert list(group.user_set.values_list("username", flat=True)) == ["vic"]
    unknown = page.post(
        "/settings/access/", {"action": "member-add", "group": "auditors", "user": "nobody"}
    )
    assert unknown.status_code == 400 and "No such user" in unknown.content.decode()
    assert (
        page.post(
            "/settings/access/", {"action": "member-add", "group": "nope", "user": "vic"}
        ).status_code
        == 404
    )
    html = page.get("/settings/access/").content.decode()
    assert 'data-group="auditors"' in html and 'data-member="vic"' in html

    assert (
        page.post(
            "/settings/access/", {"action": "member-remove", "group": "auditors", "user": "vic"}
        ).status_code
        == 302
    )
    assert not group.user_set.exists()

    # A group a collection is shared with: deleting it takes the grant away at once
    stranger = User.objects.create(username="sam")
    group_member_add(actor=SYSTEM, group=group, user=stranger)
    services.collection_share(
        actor=SYSTEM,
        collection=selectors.collection_get(owner, collection),
        principal=group,
        role="viewer",
    )
    assert selectors.readable_collections(stranger).count() == 1
    assert (
        page.post("/settings/access/", {"action": "group-delete", "group": "auditors"}).status_code
        == 302
    )
    assert not Group.objects.filter(name="auditors").exists()
    assert selectors.readable_collections(stranger).count() == 0
    event = AuditEvent.objects.get(action="group.delete")
    assert event.detail["name"] == "auditors" and event.detail["members"] == ["sam"]


def test_a_scim_provisioned_group_cannot_be_deleted_here(team):
    admin, _, viewer, *_ = team
    group = Group.objects.create(name="scim-finance")
    GroupRecord.objects.create(group=group, external_id="abc-123")
    membership_add(actor=SYSTEM, user=viewer, group=group, source=Source.SCIM)
    page = browser(admin)
    html = page.get("/settings/access/").content.decode()
    assert 'data-group="scim-finance"' in html and "Delete group scim-finance" not in html
    refused = page.post("/settings/access/", {"action": "group-delete", "group": "scim-finance"})
    assert refused.status_code == 400 and "SCIM" in refused.content.decode()
    api = client_for(admin)
    assert api.delete("/api/v1/admin/groups/scim-finance").status_code == 409
    assert Group.objects.filter(name="scim-finance").exists()
    plain = Group.objects.create(name="plain")
    assert api.delete("/api/v1/admin/groups/plain").status_code == 204
    assert not Group.objects.filter(pk=plain.pk).exists()
    assert api.delete("/api/v1/admin/groups/plain").status_code == 400  # no such group


# --- user attributes ------------------------------------------------------------------------------------------


def test_an_admin_edits_typed_user_attributes_and_sees_which_the_identity_provider_set(team):
    admin, _, viewer, *_ = team
    viewer.attributes, viewer.attribute_sources = {"department": "ops"}, {"department": "scim"}
    viewer.save(update_fields=["attributes", "attribute_sources"])
    page = browser(admin)
    html = page.get("/settings/access/users/vic/").content.decode()
    assert 'data-role="synced-note"' in html and 'value="ops"' in html

    saved = page.post(
        "/settings/access/users/vic/",
        {
            "attr_name": ["department", "clearance", "level", ""],
            "attr_type": ["text", "text", "number", "text"],
            "attr_value": ["ops", "internal", "4", ""],
        },
    )
    assert saved.status_code == 302
    viewer.refresh_from_db()
    assert viewer.attributes == {"department": "ops", "clearance": "internal", "level": 4}
    assert viewer.attribute_sources == {
        "department": "scim",
        "clearance": "admin",
        "level": "admin",
    }
    assert AuditEvent.objects.filter(
        action="user.attributes", actor=admin, target_id=str(viewer.pk)
    ).exists()

    bad = page.post(
        "/settings/access/users/vic/",
        {"attr_name": ["clearance"], "attr_type": ["text"], "attr_value": ["top"]},
    )
    assert bad.status_code == 400 and "clearance must be one of" in bad.content.decode()
    assert 'value="top"' in bad.content.decode()  # what was typed is shown again
    viewer.refresh_from_db()
    assert viewer.attributes["clearance"] == "internal"
    assert page.get("/settings/access/users/nobody/").status_code == 404


# --- document attributes --------------------------------------------------------------------------------------


def test_an_editor_labels_a_document_and_search_follows_at_once(team):
    _, owner, viewer, collection, document_id = team
    services.collection_policy_set(
        actor=SYSTEM,
        collection=selectors.collection_get(owner, collection),
        source="user.department in doc.departments",
    )
    user_attributes_set(actor=SYSTEM, user=viewer, attributes={"department": "harbour"})
    vic = client_for(viewer)
    assert vic.get("/api/v1/search", {"q": "harbour budget"}).json()["results"] == []

    page = browser(owner)
    html = page.get(
        f"/documents/{document_id}/"
    ).content.decode()  # the policy hides it from its owner too
    assert 'data-role="attributes-form"' in html and 'data-role="hidden-by-policy"' in html
    assert "four million" not in html and "/download" not in html
    saved = page.post(
        f"/documents/{document_id}/attributes/",
        {
            "attr_name": ["departments", "sensitivity"],
            "attr_type": ["text-list", "text"],
            "attr_value": ["harbour, finance", "internal"],
        },
    )
    assert saved.status_code == 302 and saved["Location"].endswith(
        f"/documents/{document_id}/#attributes"
    )
    assert AuditEvent.objects.filter(
        action="document.attributes", actor=owner, target_id=str(document_id)
    ).exists()
    results = vic.get("/api/v1/search", {"q": "harbour budget"}).json()["results"]
    assert [r["document_id"] for r in results][:1] == [document_id]

    bad = page.post(
        f"/documents/{document_id}/attributes/",
        {"attr_name": ["sensitivity"], "attr_type": ["text"], "attr_value": ["ultra"]},
    )
    assert bad.status_code == 400 and 'data-role="attribute-errors"' in bad.content.decode()

    # A viewer reads the labels but may not change them
    assert (
        'data-role="attribute-list"'
        in browser(viewer).get(f"/documents/{document_id}/").content.decode()
    )
    assert (
        browser(viewer)
        .post(
            f"/documents/{document_id}/attributes/",
            {"attr_name": ["departments"], "attr_type": ["text"], "attr_value": ["x"]},
        )
        .status_code
        == 403
    )
    assert (
        browser(User.objects.create(username="sam"))
        .post(
            f"/documents/{document_id}/attributes/",
            {"attr_name": [], "attr_type": [], "attr_value": []},
        )
        .status_code
        == 404
    )
