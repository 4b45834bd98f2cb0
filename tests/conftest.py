"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings as hypothesis_settings

# A run that repeats property tests on another database (tests/access/test_postgres.py) draws a fixed
# sequence of examples: its point is the SQL, and with its few examples a random draw can be lopsided
# enough (3 allowed of 31 seen) to fail a strategy's "not vacuous" check that the main run, with many
# examples, is there to make.
hypothesis_settings.register_profile("cairn-derandomized", derandomize=True)
if os.environ.get("CAIRN_HYPOTHESIS_DERANDOMIZE") == "1":
    hypothesis_settings.load_profile("cairn-derandomized")


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


@pytest.fixture(autouse=True)
def _fresh_query_vectors():
    """Each test embeds its queries afresh: a vector kept by an earlier test (kb.index.embed_query) would
    hide a test's own embedder (a patched one that fails, a switched model of the same id)."""
    from kb import index

    index.query_vectors_clear()
    yield
