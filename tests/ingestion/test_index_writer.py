"""The index writer keeps its copy between passes (CAIRN_INDEX_WRITER_KEEP) — and never a stale one."""

from __future__ import annotations

import pytest

from access.models import User
from access.services import Actor
from ingestion import api, indexing, pipeline
from ingestion.models import IngestionJob
from kb import index
from kb.models import Collection
from kb.retrieval import writer
from kb.retrieval.index_store import IndexStore
from kb.retrieval.lexical import tokenize
from kb.services import collection_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def loads(isolated_storage, settings, monkeypatch) -> list[int]:
    """Each ``IndexStore.load`` of the writer, counted."""
    settings.CAIRN_INDEX_WRITER_KEEP = True
    writer._kept.clear()
    seen: list[int] = []
    real = IndexStore.load

    def counted(self, *args, **kwargs):
        seen.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(IndexStore, "load", counted)
    yield seen
    writer._kept.clear()


@pytest.fixture
def collection() -> Collection:
    owner = User.objects.create_user("owner")
    return collection_create(actor=Actor(user=owner), owner=owner, name="c")


def embedded(collection: Collection, text: str) -> IngestionJob:
    """A version parsed and embedded, waiting for the index writer."""
    with api.deferred():
        result = api.document_upload(actor=Actor(user=collection.owner), collection=collection,
                                 filename="a.txt", chunks=[text.encode()])
    job = IngestionJob.objects.get(version=result.version)
    pipeline.run_ingest_job(job.pk)
    return job


def on_disk(word: str) -> list[int]:
    snapshot = index.index_store().load()
    return snapshot.lexical.search(tokenize(word), 10)[0].tolist()


def test_a_kept_copy_is_reused_and_writes_what_a_fresh_load_would(loads, collection):
    first = embedded(collection, "Lighthouse keepers trim the wicks at dusk.")
    assert indexing.index_pass().indexed_versions == [first.version_id]
    assert len(loads) == 1
    second = embedded(collection, "Harbour pilots board ships beyond the breakwater.")
    assert indexing.index_pass().indexed_versions == [second.version_id]
    assert len(loads) == 1  # no read of the files: the kept copy was current
    assert on_disk("lighthouse") and on_disk("harbour")
    store = index.index_store()
    written = store.load()
    assert len(written.lexical) == len(written.dense) == written.dense.delta.ntotal + len(written.dense._base_ids)
    kept = writer._kept[store.dir]
    assert kept.version == written.version and len(kept.lexical) == len(written.lexical)
    assert kept.dense._base is None  # the base is on disk, not held by the writer


def test_another_writer_or_a_failed_pass_makes_the_next_pass_read_the_files(loads, collection, monkeypatch):
    embedded(collection, "Tide tables for the estuary.")
    indexing.index_pass()
    assert len(loads) == 1
    store = index.index_store()
    with store.writer_lock():  # e.g. a repair tool: a new version the kept copy does not know
        store.write(store.load())
    count = len(loads)
    embedded(collection, "Fog signals sound every thirty seconds.")
    indexing.index_pass()
    assert len(loads) == count + 1 and on_disk("fog")

    def broken(self, snapshot):
        raise OSError("disk full")

    embedded(collection, "Buoys mark the channel.")
    real_write = IndexStore.write
    monkeypatch.setattr(IndexStore, "write", broken)
    with pytest.raises(OSError):
        indexing.index_pass()
    monkeypatch.setattr(IndexStore, "write", real_write)
    count = len(loads)
    indexing.index_pass()
    assert len(loads) == count + 1  # the half-mutated copy was not reused
    assert on_disk("buoys") and on_disk("fog") and on_disk("tide")


def test_without_the_setting_every_pass_reads_the_files(loads, collection, settings):
    settings.CAIRN_INDEX_WRITER_KEEP = False
    embedded(collection, "Lighthouse keepers trim the wicks at dusk.")
    indexing.index_pass()
    embedded(collection, "Harbour pilots board ships beyond the breakwater.")
    indexing.index_pass()
    assert len(loads) == 2 and not writer._kept


def test_an_index_made_by_another_tokenizer_version_is_rebuilt_by_the_next_pass(isolated_storage, collection):
    from ingestion import tasks
    from kb.retrieval.lexical import BM25Index
    from kb.retrieval.tokenize import TOKENIZER_VERSION

    embedded(collection, "Lighthouse keepers trim the wicks at dusk.")
    indexing.index_pass()
    store = index.index_store()
    with store.writer_lock():  # as an older Cairn left it: other terms, an older tokenizer version
        old = store.load()
        old.lexical, old.tokenizer_version = BM25Index(), TOKENIZER_VERSION - 1
        store.write(old)
    assert store.tokenizer_stale() and indexing.index_due()
    assert on_disk("lighthouse") == []

    tasks.run(tasks.TASK_REAP)  # the periodic reaper starts the pass (inline tasks run at once)

    assert not store.tokenizer_stale()
    assert on_disk("lighthouse") and store.load().tokenizer_version == TOKENIZER_VERSION
    assert len(store.load().dense) == len(store.load().lexical)
