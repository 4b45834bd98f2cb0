"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where torch sees a CUDA GPU; elsewhere they are skipped, with the reason."""
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if not marked:
        return
    import torch

    if torch.cuda.device_count() == 0:  # NVML: does not initialise CUDA before tests that fork
        skip = pytest.mark.skip(reason="needs a CUDA GPU (torch sees none)")
        for item in marked:
            item.add_marker(skip)


@pytest.fixture
def isolated_storage(settings, tmp_path):
    """A fresh blob store and index directory for one test."""
    settings.CAIRN_STORAGE_DIR = tmp_path / "blobs"
    settings.CAIRN_INDEX_DIR = tmp_path / "index"
    settings.CAIRN_PAGE_CACHE_DIR = tmp_path / "page-cache"
    return tmp_path


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):  # noqa: F811 (extends pytest-django's fixture)
    """On a PostgreSQL test database, let Django's flush between transactional tests TRUNCATE the audit table.

    Production refuses TRUNCATE of it (access migration 0005); the trigger
    is tested on a database of its own (tests/access/test_audit_postgres.py).
    """
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE access_auditevent DISABLE TRIGGER access_auditevent_no_truncate")


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Each test starts with empty API rate-limit counters (user ids repeat between tests)."""
    from access import ratelimit

    ratelimit.reset()
    yield
    ratelimit.reset()
