"""The sharing card on the collection page: owners see members and the policy; viewers do not."""

from __future__ import annotations

import pytest
from django.test import Client

from access.models import User
from access.services import SYSTEM
from kb import services

pytestmark = pytest.mark.django_db


@pytest.fixture
def shared(isolated_storage, settings):
    settings.CAIRN_MODE = "team"
    owner = User.objects.create(username="olga")
    viewer = User.objects.create(username="vic")
    collection = services.collection_create(actor=SYSTEM, owner=owner, name="Plans")
    services.collection_share(actor=SYSTEM, collection=collection, principal=viewer, role="viewer")
    services.collection_policy_set(actor=SYSTEM, collection=collection, source='doc.sensitivity <= "internal"')
    return owner, viewer, collection


def page(user: User, collection) -> str:
    client = Client(REMOTE_ADDR="10.0.0.5")  # not loopback: no personal-mode sign-in
    client.force_login(user)
    response = client.get(f"/collections/{collection.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_owner_sees_who_has_access_and_the_policy(shared):
    owner, _, collection = shared
    html = page(owner, collection)
    assert 'data-role="sharing"' in html and 'data-name="vic"' in html
    assert "doc.sensitivity &lt;= &quot;internal&quot;" in html
    assert "sharing.js" in html


def test_a_viewer_sees_no_sharing_card_and_a_stranger_gets_404(shared):
    _, viewer, collection = shared
    html = page(viewer, collection)
    assert 'data-role="sharing"' not in html and 'data-role="viewer-note"' in html
    stranger = User.objects.create(username="sam")
    client = Client(REMOTE_ADDR="10.0.0.6")
    client.force_login(stranger)
    assert client.get(f"/collections/{collection.pk}/").status_code == 404


def test_personal_mode_has_nobody_to_share_with_so_no_sharing_card(shared, settings):
    owner, _, collection = shared
    settings.CAIRN_MODE = "personal"
    assert 'data-role="sharing"' not in page(owner, collection)
