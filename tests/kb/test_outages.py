"""What Cairn stands on failing is a 503/507 that says so, never a 500 (the fault tests do it for real)."""

from __future__ import annotations

import errno

import pytest
from django.db import OperationalError
from django.test import Client

from kb import selectors
from tests.kb.conftest import upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def database_away(monkeypatch):
    def away(*args, **kwargs):
        raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")

    monkeypatch.setattr(selectors, "readable_collections", away)


def test_the_api_answers_503_with_retry_after_while_the_database_is_away(api, database_away):
    response = api.get("/api/v1/collections")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "unavailable"


def test_pages_answer_503_too(isolated_storage, database_away):
    response = Client(REMOTE_ADDR="127.0.0.1", raise_request_exception=False).get("/")
    assert response.status_code == 503 and b"database cannot be reached" in response.content


def test_a_full_disk_is_a_507_and_nothing_is_stored(api, collection_id, monkeypatch, settings):
    from ingestion import services

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(services, "blob_store", full)
    response = upload(api, collection_id, "a.txt", b"Fire drills happen every March.")
    assert response.status_code == 507 and "storage is full" in response.json()["error"]["message"]
    assert api.get(f"/api/v1/collections/{collection_id}/documents").json()["results"] == []


def test_a_database_that_was_never_migrated_says_so(api, monkeypatch):
    def not_migrated(*args, **kwargs):
        raise OperationalError("no such table: kb_collection")

    monkeypatch.setattr(selectors, "readable_collections", not_migrated)
    response = api.get("/api/v1/collections")
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_set_up"
    assert "manage.py migrate" in response.json()["error"]["message"]
