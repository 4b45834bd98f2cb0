"""The readable-ranges cache (kb/range_cache.py): never a different answer from the database.

These tests run outside a test transaction (``transactional_db``): inside
one the cache is bypassed by design, which is how the rest of the suite runs.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from access.models import User
from access.services import SYSTEM
from kb import range_cache, selectors
from kb.models import Collection, Document, DocumentVersion
from kb.services import collection_policy_set, collection_share

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cache():
    selectors._range_cache.cache_clear()
    yield selectors._range_cache()
    selectors._range_cache.cache_clear()


def uncached(user, **kwargs) -> np.ndarray:
    """The ranges straight from the database."""
    original = selectors._range_cache
    selectors._range_cache = lambda: None
    try:
        return selectors.searchable_ranges(user, **kwargs)
    finally:
        selectors._range_cache = original


def as_set(ranges: np.ndarray) -> set[tuple[int, int]]:
    return {(int(s), int(c)) for s, c in ranges}


def new_document(collection: Collection, owner: User, start: int, count: int = 3, **attributes) -> Document:
    document = Document.objects.create(collection=collection, title=f"d{start}", created_by=owner,
                                       attributes=attributes)
    version_of(document, owner, start, count)
    return document


def version_of(document: Document, owner: User, start: int, count: int) -> DocumentVersion:
    number = document.versions.unrestricted("test").count() + 1
    version = DocumentVersion.objects.create(
        document=document, number=number, sha256=f"{start:064x}", size=1, kind="txt", created_by=owner,
        chunk_id_start=start, chunk_count=count, indexed_at=timezone.now(),
    )
    document.make_current(version)
    document.save(update_fields=Document.CURRENT_FIELDS)
    return version


@pytest.fixture
def world():
    owner = User.objects.create_user("owner", password=None)
    reader = User.objects.create_user("reader", password=None, attributes={"clearance": "internal"})
    a = Collection.objects.create(name="a", owner=owner)
    b = Collection.objects.create(name="b", owner=owner)
    collection_share(actor=SYSTEM, collection=a, principal=reader, role="viewer")
    collection_share(actor=SYSTEM, collection=b, principal=reader, role="viewer")
    collection_policy_set(actor=SYSTEM, collection=b, source="doc.sensitivity <= user.clearance")
    return owner, reader, a, b


def test_a_hit_is_the_same_array_and_read_only(cache, world):
    owner, reader, a, _ = world
    new_document(a, owner, 1)
    first = selectors.searchable_ranges(reader)
    second = selectors.searchable_ranges(reader)
    assert second is first and cache.hits == 1 and cache.misses == 1
    assert as_set(first) == {(1, 3)}
    with pytest.raises(ValueError):
        first[0, 0] = 99


def test_random_document_changes_never_leave_a_stale_answer(cache, world):
    """After each of 120 random writes, by every path that changes documents, cached == database."""
    owner, reader, a, b = world
    rng = random.Random(7)
    documents = [new_document(a, owner, 1)]
    next_start = 100
    levels = ["public", "internal", "confidential"]
    for _step in range(120):
        op = rng.choice(["create", "soft_delete", "restore", "hard_delete", "attributes", "move",
                         "new_version", "queryset_update", "raw_sql"])
        document = rng.choice(documents) if documents else None
        if op == "create" or document is None:
            target = rng.choice([a, b])
            documents.append(new_document(target, owner, next_start, rng.randint(1, 5),
                                          sensitivity=rng.choice(levels)))
            next_start += 10
        elif op == "soft_delete":
            Document.objects.unrestricted("test").filter(pk=document.pk).update(deleted_at=timezone.now())
        elif op == "restore":
            Document.objects.unrestricted("test").filter(pk=document.pk).update(deleted_at=None)
        elif op == "hard_delete":
            document.delete()
            documents.remove(document)
        elif op == "attributes":
            document.attributes = {"sensitivity": rng.choice(levels)}
            document.save(update_fields=["attributes"])
        elif op == "move":
            Document.objects.unrestricted("test").filter(pk=document.pk).update(collection=rng.choice([a, b]))
        elif op == "new_version":
            document.refresh_from_db()
            version_of(document, owner, next_start, rng.randint(1, 5))
            next_start += 10
        elif op == "queryset_update":
            Document.objects.unrestricted("test").filter(pk=document.pk).update(search_chunk_count=rng.randint(0, 4))
        else:
            with connection.cursor() as cursor:
                cursor.execute("UPDATE kb_document SET search_chunk_start = %s WHERE id = %s",
                               [next_start, document.pk])
            next_start += 10
        for user in (owner, reader):
            for kwargs in ({}, {"collection_ids": [a.pk]}, {"collection_ids": [b.pk]}):
                cached = selectors.searchable_ranges(user, **kwargs)
                assert as_set(cached) == as_set(uncached(user, **kwargs)), (op, user, kwargs)
                assert as_set(selectors.searchable_ranges(user, **kwargs)) == as_set(cached)
    assert cache.hits > 0 and cache.misses > 0


def test_a_policy_or_grant_change_needs_no_document_write(cache, world):
    """The decision is made per request: a new policy or a revoked grant applies at once."""
    owner, reader, a, b = world
    new_document(a, owner, 1)
    new_document(b, owner, 10, sensitivity="secret")
    new_document(b, owner, 20, sensitivity="public")
    assert as_set(selectors.searchable_ranges(reader)) == {(1, 3), (20, 3)}
    collection_policy_set(actor=SYSTEM, collection=a, source='doc.sensitivity == "public"')
    assert as_set(selectors.searchable_ranges(reader)) == {(20, 3)}
    from kb.services import collection_unshare

    collection_unshare(actor=SYSTEM, collection=b, principal=reader)
    assert as_set(selectors.searchable_ranges(reader)) == set()
    User.objects.filter(pk=reader.pk).update(attributes={"clearance": "secret"})
    reader.refresh_from_db()
    collection_share(actor=SYSTEM, collection=b, principal=reader, role="viewer")
    assert as_set(selectors.searchable_ranges(reader)) == {(10, 3), (20, 3)}


def test_a_missing_trigger_bypasses_the_cache_and_migrate_restores_it(cache, world):
    owner, reader, a, _ = world
    new_document(a, owner, 1)
    assert range_cache.generation(connection) is not None
    with connection.cursor() as cursor:  # what a SQLite table rebuild does to triggers
        cursor.execute("DROP TRIGGER kb_document_generation_update")
    assert range_cache.generation(connection) is None
    selectors.searchable_ranges(reader)
    Document.objects.unrestricted("test").filter(collection=a).update(deleted_at=timezone.now())  # not counted
    assert as_set(selectors.searchable_ranges(reader)) == set()
    assert cache.hits == 0
    before = cache.misses
    call_command("migrate", verbosity=0)
    assert range_cache.generation(connection) is not None
    Document.objects.unrestricted("test").filter(collection=a).update(deleted_at=None)
    assert as_set(selectors.searchable_ranges(reader)) == {(1, 3)}
    assert as_set(selectors.searchable_ranges(reader)) == {(1, 3)} and cache.hits == 1 and cache.misses == before + 1


def test_the_comparison_catches_a_trigger_that_does_not_count(cache, world):
    """Guard for the tests above: with a do-nothing trigger the cache does go stale, and is seen to."""
    owner, reader, a, _ = world
    new_document(a, owner, 1)
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER kb_document_generation_update")
        cursor.execute("CREATE TRIGGER kb_document_generation_update AFTER UPDATE ON kb_document "
                       "BEGIN SELECT 1; END")
    assert as_set(selectors.searchable_ranges(reader)) == {(1, 3)}
    Document.objects.unrestricted("test").filter(collection=a).update(deleted_at=timezone.now())
    assert as_set(selectors.searchable_ranges(reader)) != as_set(uncached(reader))
    call_command("migrate", verbosity=0)  # leaves a trigger of that name alone …
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER kb_document_generation_update")
    range_cache.install(connection)  # … a real one counts again, and install bumps the generation
    assert as_set(selectors.searchable_ranges(reader)) == set()


def test_inside_a_transaction_the_database_is_read(cache, world):
    owner, reader, a, _ = world
    new_document(a, owner, 1)
    selectors.searchable_ranges(reader)
    with transaction.atomic():
        assert range_cache.generation(connection) is None
        Document.objects.unrestricted("test").filter(collection=a).update(deleted_at=timezone.now())
        assert as_set(selectors.searchable_ranges(reader)) == set()
        transaction.set_rollback(True)
    assert as_set(selectors.searchable_ranges(reader)) == {(1, 3)}


def test_a_table_emptied_and_refilled_gets_a_new_token(cache, world):
    owner, reader, a, _ = world
    new_document(a, owner, 1)
    first = range_cache.generation(connection)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {range_cache.TABLE}")
    assert range_cache.generation(connection) is None
    new_document(a, owner, 10)
    again = range_cache.generation(connection)
    assert again is not None and again[1] != first[1]


def test_the_byte_budget_evicts_the_least_recently_used(monkeypatch):
    entry = 16 * 10 + len("q") + 32 + 256  # ten ranges, the key's SQL and one parameter, overhead
    small = range_cache.RangeCache(max_bytes=3 * entry)  # three entries

    class FakeConnection:  # only what RangeCache reads from a connection besides the generation
        alias = "default"
        settings_dict = {"NAME": "x"}
        vendor = "sqlite"
        in_atomic_block = False

    fetched = []

    def fetch(i):
        def run():
            fetched.append(i)
            return np.full((10, 2), i, dtype=np.int64)
        return run

    monkeypatch.setattr(range_cache, "generation", lambda connection: (1, "t"))
    for i in range(4):
        small.get(FakeConnection(), "q", (i,), fetch(i))
    small.get(FakeConnection(), "q", (3,), fetch(3))  # hit
    small.get(FakeConnection(), "q", (0,), fetch(0))  # evicted: fetched again
    assert fetched == [0, 1, 2, 3, 0] and small.bytes == 3 * entry
    too_big = range_cache.RangeCache(max_bytes=16)
    too_big.get(FakeConnection(), "q", (9,), fetch(9))
    too_big.get(FakeConnection(), "q", (9,), fetch(9))
    assert fetched[-2:] == [9, 9]
