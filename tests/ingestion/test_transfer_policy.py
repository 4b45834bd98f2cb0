"""An exported collection carries its access policy; importing sets it once (a second import changes nothing)."""

from __future__ import annotations

import pytest

from access.models import AuditEvent, Policy, User
from access.selectors import policy_source
from access.services import SYSTEM
from ingestion.transfer import archive_export, archive_import
from kb.models import Collection
from kb.services import collection_create, collection_policy_set

pytestmark = pytest.mark.django_db(transaction=True)
POLICY = 'user.clearance >= doc.sensitivity or doc.sensitivity == "public"'


def test_the_policy_travels_with_its_collection(tmp_path, isolated_storage):
    olga, pavel = User.objects.create(username="olga"), User.objects.create(username="pavel")
    collection = collection_create(actor=SYSTEM, owner=olga, name="Contracts")
    collection_policy_set(actor=SYSTEM, collection=collection, source=POLICY)
    archive = tmp_path / "contracts.tar"
    archive_export(archive)

    archive_import(archive, owner=pavel, actor=SYSTEM)
    imported = Collection.objects.get(owner=pavel, name="Contracts")
    assert policy_source(Policy.collection_scope(imported.pk)) == POLICY
    sets = AuditEvent.objects.filter(action="policy.set").count()
    archive_import(archive, owner=pavel, actor=SYSTEM)
    assert AuditEvent.objects.filter(action="policy.set").count() == sets  # idempotent
