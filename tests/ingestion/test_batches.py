"""Small documents waiting together are embedded together (``run_ingest_batch``), and each stays a job of its own:
its own chunks, state, FAILED reason and cancellation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from django.utils import timezone

from access.models import User
from access.services import Actor
from ingestion import api, pipeline, tasks
from ingestion.local_worker import LocalWorker
from ingestion.models import IngestionJob
from kb import index
from kb.models import Chunk, Collection, Document
from kb.retrieval.embedding import SentenceTransformerEmbedder
from kb.retrieval.lexical import tokenize
from kb.retrieval.passages import index_text
from kb.services import collection_create

pytestmark = pytest.mark.django_db(transaction=True)
Status = IngestionJob.Status

WORDS = ["heron", "kestrel", "osprey", "plover", "curlew", "bittern"]


def note(word: str) -> bytes:
    return (f"# Station {word}\n\nThe keeper of the {word} lighthouse trims the wick at dusk and writes the "
            f"code word {word} in the log before the tide turns.").encode()


@pytest.fixture(autouse=True)
def _batches(settings):
    """The defaults, whatever the environment says."""
    settings.CAIRN_INGEST_BATCH = 32
    settings.CAIRN_INGEST_BATCH_MAX_BYTES = 32 * 1024


@pytest.fixture
def collection(isolated_storage) -> Collection:
    owner = User.objects.create_user("owner")
    return collection_create(actor=Actor(user=owner), owner=owner, name="c")


def queued(collection: Collection, files: dict[str, bytes]) -> dict[str, IngestionJob]:
    """Uploaded while no worker runs: their jobs wait, PENDING, in upload order."""
    jobs = {}
    with api.deferred():
        for name, data in files.items():
            result = api.document_upload(actor=Actor(user=collection.owner), collection=collection, filename=name,
                                         chunks=[data])
            jobs[name] = IngestionJob.objects.get(version=result.version)
    return jobs


def fresh(job: IngestionJob) -> IngestionJob:
    return IngestionJob.objects.select_related("version__document").get(pk=job.pk)


class Calls:
    """The embedder's ``encode`` calls, counted; ``during`` runs inside each call (after the real one)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts: list[list[str]] = []
        self.during: Callable[[list[str]], None] | None = None
        self.real = SentenceTransformerEmbedder.encode
        calls = self

        def counted(embedder: SentenceTransformerEmbedder, texts: Any, *, batch_size: int = 64) -> np.ndarray:
            calls.texts.append(list(texts))
            vectors = calls.real(embedder, texts, batch_size=batch_size)
            if calls.during is not None:
                calls.during(list(texts))
            return vectors

        monkeypatch.setattr(SentenceTransformerEmbedder, "encode", counted)

    def __len__(self) -> int:
        return len(self.texts)

    def alone(self, text: str) -> np.ndarray:
        """``text`` embedded on its own, as one document alone would be."""
        return self.real(index.active_embedder(), [text])[0]


@pytest.fixture
def encode_calls(monkeypatch) -> Calls:
    return Calls(monkeypatch)


def chunks_of(job: IngestionJob) -> list[Chunk]:
    return list(Chunk.objects.unrestricted("test").filter(version_id=job.version_id).order_by("ordinal"))


def on_disk(word: str) -> list[int]:
    """Chunk ids the written index finds for ``word`` (BM25)."""
    snapshot = index.index_store().load()
    assert snapshot is not None
    return snapshot.lexical.search(tokenize(word), 10)[0].tolist()


def run_first(jobs: dict[str, IngestionJob]) -> None:
    """What an ingest worker does with the first job's message (inline here: its index pass follows at once)."""
    tasks.run(tasks.TASK_INGEST, min(job.pk for job in jobs.values()))


def test_small_documents_waiting_together_share_one_encode_call_and_each_ends_indexed_with_its_own_chunks(
        collection, encode_calls):
    jobs = queued(collection, {f"{word}.md": note(word) for word in WORDS})

    run_first(jobs)

    assert len(encode_calls) == 1  # one call for the six documents, not six
    assert len(encode_calls.texts[0]) == sum(len(chunks_of(job)) for job in jobs.values())
    for word in WORDS:
        job = fresh(jobs[f"{word}.md"])
        assert (job.status, job.attempts, job.progress, job.error) == (Status.INDEXED, 1, 1.0, "")
        assert job.parse_seconds is not None and job.chunk_seconds is not None and job.embed_seconds is not None
        assert job.version.document.current_version_id == job.version_id
        chunks = chunks_of(job)
        assert chunks and all(word in chunk.text for chunk in chunks)
        assert job.version.chunk_count == len(chunks) and job.version.chunk_id_start == chunks[0].id
        # Its own vectors: what embedding this document alone gives (the batch's padding changes nothing).
        for chunk in chunks:
            alone = encode_calls.alone(index_text(chunk.text, chunk.heading, job.version.parsed_title))
            assert float(np.frombuffer(chunk.embedding, dtype=np.float32) @ alone) > 0.999  # another note: < 0.8
        assert on_disk(word)[0] in {chunk.id for chunk in chunks}
    # The other jobs' own messages, delivered later, find nothing to do.
    for job in jobs.values():
        assert tasks.run(tasks.TASK_INGEST, job.pk) == Status.INDEXED
    assert len(encode_calls) == 1


def test_a_bad_document_in_a_batch_fails_alone_with_its_own_reason(collection, encode_calls, settings, monkeypatch):
    settings.CAIRN_MAX_PASSAGES_PER_DOCUMENT = 2
    real_parse = pipeline.parse

    def parse(data: bytes, kind: str | None = None) -> Any:
        if b"poison" in data:
            raise RuntimeError("the parser ran out of memory on poison.md")
        return real_parse(data, kind)

    monkeypatch.setattr(pipeline, "parse", parse)
    long = "\n\n".join(f"Paragraph {i} about the heron lighthouse, its lamp, its lens and its keeper's log."
                       for i in range(40)).encode()
    jobs = queued(collection, {"heron.md": note("heron"), "long.md": long, "poison.md": b"poison " + note("osprey"),
                               "kestrel.md": note("kestrel")})

    run_first(jobs)

    too_long, poison = fresh(jobs["long.md"]), fresh(jobs["poison.md"])
    assert too_long.status == Status.FAILED and too_long.attempts == 1  # a budget is final, not retried
    assert too_long.failure_reason == "too_many_passages" and "limit of 2 per document" in too_long.error
    # A crash is retried, alone, until its attempts are spent: its own count, its own error.
    assert poison.status == Status.FAILED and poison.attempts == poison.max_attempts == 3
    assert poison.failure_reason == "errors" and "poison.md" in poison.error and "after 3 attempts" in poison.error
    for name in ("heron.md", "kestrel.md"):
        job = fresh(jobs[name])
        assert (job.status, job.attempts, job.error) == (Status.INDEXED, 1, "")
        assert chunks_of(job)
    assert len(encode_calls) == 1  # the two good documents, together
    assert not chunks_of(too_long) and not chunks_of(poison)


def test_a_document_that_makes_the_shared_embedding_fail_is_found_and_fails_alone(collection, encode_calls):
    def refuse_poison(texts: list[str]) -> None:
        if any("osprey" in text for text in texts):
            raise ValueError("the model refused a passage about ospreys")

    encode_calls.during = refuse_poison
    jobs = queued(collection, {f"{word}.md": note(word) for word in ("heron", "osprey", "kestrel")})

    run_first(jobs)

    osprey = fresh(jobs["osprey.md"])
    assert osprey.status == Status.FAILED and "ospreys" in osprey.error and not chunks_of(osprey)
    for name in ("heron.md", "kestrel.md"):
        assert fresh(jobs[name]).status == Status.INDEXED and chunks_of(jobs[name])
    # The shared call failed; then each document on its own (osprey again on each of its retries).
    assert len(encode_calls.texts[0]) == 3 and [len(t) for t in encode_calls.texts[1:4]] == [1, 1, 1]


def test_deleting_one_document_while_its_batch_is_embedded_cancels_only_it(collection, encode_calls):
    jobs = queued(collection, {f"{word}.md": note(word) for word in ("heron", "osprey", "kestrel")})
    osprey = Document.objects.unrestricted("test").get(pk=jobs["osprey.md"].version.document_id)

    def delete_osprey(texts: list[str]) -> None:
        with api.deferred():  # its compaction is collected, not run: none of it is in the index yet
            api.document_delete(actor=Actor(user=collection.owner), document=osprey)

    encode_calls.during = delete_osprey
    run_first(jobs)

    cancelled = fresh(jobs["osprey.md"])
    assert cancelled.status == Status.FAILED and cancelled.failure_reason == "cancelled"
    assert "deleted" in cancelled.error and not chunks_of(cancelled)
    assert on_disk("osprey") == []
    for word in ("heron", "kestrel"):
        job = fresh(jobs[f"{word}.md"])
        assert job.status == Status.INDEXED and on_disk(word)[0] in {c.id for c in chunks_of(job)}
    assert len(encode_calls) == 1


def test_a_document_deleted_while_it_waits_is_not_taken_into_a_batch(collection, encode_calls):
    jobs = queued(collection, {f"{word}.md": note(word) for word in ("heron", "osprey", "kestrel")})
    Document.objects.unrestricted("test").filter(pk=jobs["osprey.md"].version.document_id).update(
        deleted_at=timezone.now())

    outcomes = pipeline.run_ingest_batch(jobs["heron.md"].pk)

    assert sorted(o.job_id for o in outcomes) == sorted([jobs["heron.md"].pk, jobs["kestrel.md"].pk])
    assert fresh(jobs["osprey.md"]).status == Status.PENDING  # its own message finds it deleted
    assert pipeline.run_ingest_batch(jobs["osprey.md"].pk)[0].status == Status.FAILED


def test_large_documents_and_jobs_on_a_later_attempt_run_alone(collection, encode_calls, settings):
    settings.CAIRN_INGEST_BATCH_MAX_BYTES = 1024
    big = "\n\n".join(f"Paragraph {i} on the keeper's duties at the plover light." for i in range(40)).encode()
    jobs = queued(collection, {"big.md": big, "heron.md": note("heron"), "osprey.md": note("osprey"),
                               "kestrel.md": note("kestrel")})
    # kestrel's first attempt was lost (a worker killed under it): the reaper sent it back to PENDING.
    IngestionJob.objects.filter(pk=jobs["kestrel.md"].pk).update(attempts=1)

    together = pipeline.run_ingest_batch(jobs["heron.md"].pk)

    assert [o.job_id for o in together] == [jobs["heron.md"].pk, jobs["osprey.md"].pk]
    assert {o.status for o in together} == {Status.EMBEDDING}
    assert fresh(jobs["big.md"]).status == fresh(jobs["kestrel.md"]).status == Status.PENDING
    assert [o.job_id for o in pipeline.run_ingest_batch(jobs["big.md"].pk)] == [jobs["big.md"].pk]
    assert [o.job_id for o in pipeline.run_ingest_batch(jobs["kestrel.md"].pk)] == [jobs["kestrel.md"].pk]
    assert len(encode_calls) == 3


def test_a_batch_is_bounded_by_cairn_ingest_batch(collection, encode_calls, settings):
    settings.CAIRN_INGEST_BATCH = 4
    jobs = queued(collection, {f"{word}.md": note(word) for word in WORDS})

    run_first(jobs)

    assert [fresh(job).status for job in jobs.values()] == [Status.INDEXED] * 4 + [Status.PENDING] * 2
    assert len(encode_calls) == 1


def test_the_command_line_batches_too_and_indexes_everything(collection, encode_calls):
    jobs = queued(collection, {f"{word}.md": note(word) for word in WORDS})
    done: list[int] = []

    api.jobs_run_here([job.pk for job in jobs.values()], index_every=4, progress=done.append)

    assert all(fresh(job).status == Status.INDEXED for job in jobs.values())
    assert len(encode_calls) == 1 and done[-1] == len(WORDS)


def test_the_personal_worker_thread_embeds_what_waits_together(collection, encode_calls, settings):
    settings.CAIRN_TASKS = "inline"  # the index pass each batch sends runs in the worker's thread too
    jobs = queued(collection, {f"{word}.md": note(word) for word in WORDS})
    worker = LocalWorker(tasks.run)
    try:
        for job in jobs.values():  # what the upload sends in the personal shape: one task per job
            worker.submit(tasks.TASK_INGEST, job.pk)
        deadline = time.monotonic() + 120
        while not worker.idle() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    assert [fresh(job).status for job in jobs.values()] == [Status.INDEXED] * len(WORDS)
    assert len(encode_calls) == 1
