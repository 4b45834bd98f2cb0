"""Every query of documents, versions and chunks says whose scope it reads (kb.models.RestrictedQuerySet).

The guard is the queryset itself: unscoped, it refuses to reach the
database.  The text check at the end is the backstop STYLE.md asks for: it
keeps each scope decision visible on the line that makes it, in code paths
a test might not run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from access.models import User
from access.services import SYSTEM, Actor
from ingestion.services import document_upload
from kb import selectors
from kb.models import Chunk, Collection, Document, DocumentVersion, GoldenQuestion, UnscopedQuery
from kb.services import collection_create, collection_policy_set, collection_share

ROOT = Path(__file__).resolve().parents[2]
PROTECTED = ("Document", "DocumentVersion", "Chunk")


@pytest.fixture
def world(isolated_storage, transactional_db):
    """Two indexed documents (inline tasks run on commit); a policy hides the secret one from the reader."""
    owner = User.objects.create_user("owner", attributes={"clearance": "secret"})
    reader = User.objects.create_user("reader", attributes={"clearance": "internal"})
    collection = collection_create(actor=SYSTEM, owner=owner, name="c")
    actor = Actor(user=owner)
    for name, text, sensitivity in (("a.txt", b"Alpha plans for the harbour.", "internal"),
                                    ("b.txt", b"Bravo plans for the quarry.", "secret")):
        document = document_upload(actor=actor, collection=collection, filename=name, chunks=[text]).document
        Document.objects.unrestricted("test").filter(pk=document.pk).update(attributes={"sensitivity": sensitivity})
    collection_share(actor=SYSTEM, collection=collection, principal=reader, role="viewer")
    collection_policy_set(actor=SYSTEM, collection=collection, source="user.clearance >= doc.sensitivity")
    return owner, reader, collection


def evaluations(queryset):
    return {
        "list": lambda: list(queryset), "len": lambda: len(queryset), "bool": lambda: bool(queryset),
        "count": queryset.count, "exists": queryset.exists, "first": queryset.first,
        "get": lambda: queryset.get(pk=1), "iterator": lambda: list(queryset.iterator()),
        "values_list": lambda: list(queryset.values_list("pk", flat=True)),
        "aggregate": lambda: queryset.aggregate(n=__import__("django.db.models", fromlist=["Count"]).Count("pk")),
        "in_bulk": lambda: queryset.in_bulk([1]), "update": lambda: queryset.update(pk=0) if False else
        queryset.filter(pk=-1).update(**({"title": "x"} if queryset.model is Document else
                                           {"text": "x"} if queryset.model is Chunk else {"kind": "x"})),
        "delete": lambda: queryset.filter(pk=-1).delete(), "index": lambda: queryset[0],
    }


@pytest.mark.parametrize("model", [Document, DocumentVersion, Chunk], ids=lambda m: m.__name__)
def test_an_unscoped_query_refuses_to_reach_the_database(world, model):
    for name, run in evaluations(model.objects.filter(pk__gt=0)).items():
        with pytest.raises(UnscopedQuery, match=model.__name__):
            run()
        assert name


def test_related_managers_are_restricted_too(world):
    owner, _, collection = world
    document = selectors.readable_documents(owner).first()
    golden = GoldenQuestion.objects.create(collection=collection, question="q")
    golden.expected_documents.add(document)
    for related in (collection.documents.all(), document.versions.all(), document.latest_version.chunks.all(),
                    GoldenQuestion.objects.get(pk=golden.pk).expected_documents.all()):
        with pytest.raises(UnscopedQuery):
            list(related)
    assert list(collection.documents.restrict(owner)) and list(document.versions.restrict(owner))


def test_restrict_is_the_read_decision_and_versions_and_chunks_follow_their_documents(world):
    owner, reader, collection = world
    for user in (owner, reader):
        readable = set(selectors.readable_documents(user).values_list("pk", flat=True))
        assert set(Document.objects.restrict(user).values_list("pk", flat=True)) == readable
        assert set(DocumentVersion.objects.restrict(user).values_list("document_id", flat=True)) == readable
        assert set(Chunk.objects.restrict(user).values_list("document_id", flat=True)) == readable
    assert len(Document.objects.restrict(owner)) == 2 and len(Document.objects.restrict(reader)) == 1
    nobody = User.objects.create_user("nobody")
    assert not Chunk.objects.restrict(nobody).exists() and not Document.objects.restrict(None).exists()
    # change: readable and in a collection the user edits; manage: live in an edited collection, any policy.
    assert not Document.objects.restrict(reader, "change").exists()
    assert Document.objects.restrict(owner, "manage").count() == 2
    with pytest.raises(ValueError, match="action"):
        Document.objects.restrict(owner, "delete")


def test_unrestricted_says_why():
    with pytest.raises(ValueError, match="say why"):
        Document.objects.unrestricted("  ")


def _app_files() -> list[Path]:
    return sorted(p for package in ("kb", "ingestion", "access", "inference", "config")
                  for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


MANAGER = re.compile(rf"\b({'|'.join(PROTECTED)})\.objects\b(?!\.(create|bulk_create|restrict|unrestricted)\()")
RELATED = re.compile(r"\.(documents|versions|chunks|expected_documents)\.(?!restrict\(|unrestricted\(|add\(|through\b)\w")
BYPASS = re.compile(rf"\b({'|'.join(PROTECTED)})\.(_default_manager|_base_manager|objects\.raw)\b")


def test_every_scope_decision_is_written_where_the_query_is_made():
    """Backstop: outside kb/models.py, a protected manager is scoped on the line that uses it; no bypass."""
    offenders = []
    for path in _app_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel == "kb/models.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if MANAGER.search(code) or BYPASS.search(code) or RELATED.search(code):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == [], "scope these with .restrict(user, action) or .unrestricted(reason):\n" + "\n".join(
        offenders)


def test_the_backstop_would_catch_a_bypass():
    assert MANAGER.search("chunks = Chunk.objects.filter(pk=1)")
    assert not MANAGER.search('chunks = Chunk.objects.unrestricted("writer").filter(pk=1)')
    assert RELATED.search("version.chunks.order_by('ordinal')")
    assert not RELATED.search("version.chunks.restrict(user).order_by('ordinal')")
    assert BYPASS.search("Document._default_manager.all()")
    assert Collection  # collections are scoped by the selectors' grant queries, not by this queryset
