"""The ingestion state machine: claims, lost claims, retries, the reaper."""

from __future__ import annotations

import pytest

from access.models import User
from access.services import Actor
from ingestion import pipeline
from ingestion.models import IngestionJob
from ingestion.services import document_upload
from kb.models import Chunk
from kb.services import collection_create

pytestmark = pytest.mark.django_db(transaction=True)

Status = IngestionJob.Status


@pytest.fixture
def owner(isolated_storage) -> User:
    return User.objects.create_user("owner")


def _queued_job(owner: User, text: bytes = b"Plain text about lighthouses and their keepers.") -> IngestionJob:
    """Upload without running the job (dispatch is collected, not executed)."""
    from ingestion import api

    collection = collection_create(actor=Actor(user=owner), owner=owner, name="c")
    with api.deferred():
        result = document_upload(actor=Actor(user=owner), collection=collection, filename="a.txt", chunks=[text])
    return IngestionJob.objects.get(version=result.version)


def test_a_job_can_be_claimed_once(owner):
    job = _queued_job(owner)
    assert pipeline.job_claim(job.pk) == 1
    assert pipeline.job_claim(job.pk) is None
    job.refresh_from_db()
    assert job.status == Status.PARSING and job.attempts == 1


def test_running_a_job_twice_does_nothing_the_second_time(owner):
    job = _queued_job(owner)
    assert pipeline.run_ingest_job(job.pk).status == Status.EMBEDDING
    chunks = Chunk.objects.unrestricted("test").filter(version=job.version).count()
    assert pipeline.run_ingest_job(job.pk).status == Status.EMBEDDING  # not claimed again
    assert Chunk.objects.unrestricted("test").filter(version=job.version).count() == chunks > 0


def test_a_worker_whose_claim_was_taken_over_cannot_write(owner):
    job = _queued_job(owner)
    stale_attempt = pipeline.job_claim(job.pk)
    reaped = pipeline.jobs_reap(stuck_after=0)
    assert reaped.requeued == [job.pk]
    assert pipeline.job_claim(job.pk) == 2
    with pytest.raises(pipeline.LostClaim):
        pipeline._advance(job.pk, stale_attempt, Status.PARSING, status=Status.CHUNKING)


def test_a_job_that_keeps_crashing_ends_failed_not_in_a_loop(owner, monkeypatch):
    def explode(data, kind=None):
        raise RuntimeError("worker ran out of memory")

    monkeypatch.setattr(pipeline, "parse", explode)
    job = _queued_job(owner)
    from ingestion import tasks

    tasks.run("cairn.ingest.process", job.pk)  # inline mode re-dispatches retries at once
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert job.attempts == job.max_attempts == 3
    assert "after 3 attempts" in job.error and "RuntimeError" in job.error


def test_the_reaper_fails_a_job_stuck_with_no_attempts_left(owner):
    job = _queued_job(owner)
    IngestionJob.objects.filter(pk=job.pk).update(status=Status.EMBEDDING, attempts=3)
    result = pipeline.jobs_reap(stuck_after=0)
    job.refresh_from_db()
    assert result.failed == [job.pk] and job.status == Status.FAILED
    assert "did not finish after 3 attempts" in job.error


def test_the_reaper_leaves_fresh_jobs_alone(owner):
    job = _queued_job(owner)
    pipeline.job_claim(job.pk)
    result = pipeline.jobs_reap(stuck_after=3600)
    assert result.requeued == [] and result.failed == []


def test_progress_is_recorded_and_the_job_ends_indexed(owner):
    from ingestion.indexing import index_pass

    job = _queued_job(owner, b"\n\n".join(b"Paragraph %d about harbours, tides and ships." % i for i in range(200)))
    seen: list[tuple[str, int, int]] = []
    pipeline.run_ingest_job(job.pk, progress=lambda stage, done, total: seen.append((stage, done, total)))
    job.refresh_from_db()
    assert job.status == Status.EMBEDDING and job.ready_to_index and job.progress == 1.0
    assert seen and seen[-1][1] == seen[-1][2]
    assert index_pass().indexed_versions == [job.version_id]
    job.refresh_from_db()
    assert job.status == Status.INDEXED and job.version.document.current_version_id == job.version_id
