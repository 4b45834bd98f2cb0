"""The ingestion pipeline: a job's state machine — claim, parse, chunk, embed, hand over to the index writer.

Idempotent and safe under ``acks_late``: every transition is a conditional
update on ``(status, attempts)``; a worker whose claim was taken over finds
its next update refused (``LostClaim``) and stops without writing.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ingestion.chunking import ChunkDraft, chunk_document, full_text
from ingestion.models import IngestionJob
from ingestion.parsers import ParseError
from ingestion.parsing import parse
from kb import index
from kb.models import Chunk, DocumentVersion
from kb.retrieval.embedding import Embedder
from kb.retrieval.passages import index_text
from kb.services import chunk_ids_reserve
from kb.storage import blob_read

log = logging.getLogger(__name__)
WORKER = "the ingest worker acts on its job's version, for no one user"  # why these queries read past every user's scope
Status = IngestionJob.Status
FailureReason = IngestionJob.FailureReason
WORKER_NAME = f"{socket.gethostname()}"

ProgressCallback = Callable[[str, int, int], None]


class LostClaim(Exception):
    """Another worker (or the reaper) took this job over; stop without writing."""


class Cancelled(Exception):
    """The document was deleted while its job ran; stop at the next step without writing."""


# Characters per token of ordinary text are 4-5; with 6 the estimate below stays under the real count.
_CHARS_PER_TOKEN_AT_MOST = 6


@dataclass(frozen=True)
class JobOutcome:
    job_id: int
    status: str
    error: str = ""
    retry_in: float | None = None


def job_claim(job_id: int) -> int | None:
    """PENDING → PARSING; returns the attempt number that now owns the job, or None."""
    job = IngestionJob.objects.filter(pk=job_id, status=Status.PENDING).values("attempts", "max_attempts").first()
    if job is None:
        return None
    attempt = job["attempts"] + 1
    now = timezone.now()
    if attempt > job["max_attempts"]:
        IngestionJob.objects.filter(pk=job_id, status=Status.PENDING, attempts=job["attempts"]).update(
            status=Status.FAILED, finished_at=now, updated_at=now, detail="",
            error=f"Gave up after {job['max_attempts']} attempts.", failure_reason=FailureReason.ERRORS,
        )
        return None
    claimed = IngestionJob.objects.filter(pk=job_id, status=Status.PENDING, attempts=job["attempts"]).update(
        status=Status.PARSING, attempts=attempt, worker=WORKER_NAME[:200], started_at=now, updated_at=now,
        error="", detail="Reading the file", progress=0.0, ready_to_index=False, failure_reason="",
    )
    return attempt if claimed else None


def _advance(job_id: int, attempt: int, expected: str, **fields: object) -> None:
    """The next step of a claimed job; ``LostClaim`` if another worker owns it, ``Cancelled`` if its document
    was deleted meanwhile (every step checks, so a delete stops the work at the next one)."""
    fields.setdefault("updated_at", timezone.now())
    updated = IngestionJob.objects.filter(pk=job_id, status=expected, attempts=attempt,
                                          version__document__deleted_at__isnull=True).update(**fields)
    if not updated:
        deleted = IngestionJob.objects.filter(pk=job_id, version__document__deleted_at__isnull=False).exists()
        raise Cancelled(job_id) if deleted else LostClaim(job_id)


def _fail(job_id: int, attempt: int, message: str, reason: str) -> None:
    now = timezone.now()
    IngestionJob.objects.filter(pk=job_id, attempts=attempt, status__in=IngestionJob.ACTIVE).update(
        status=Status.FAILED, error=message[:2000], detail="", finished_at=now, updated_at=now,
        ready_to_index=False, failure_reason=reason,
    )


class _StageClock:
    """Seconds spent in each stage of one attempt (``IngestionJob.parse_seconds`` …)."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def lap(self) -> float:
        now = time.monotonic()
        took, self._started = now - self._started, now
        return round(took, 4)


def run_ingest_job(job_id: int, *, progress: ProgressCallback | None = None) -> JobOutcome:
    """Process one job end to end up to "ready for the index writer".

    Parse errors are permanent (FAILED at once, with the parser's message);
    anything else is treated as transient and retried until the attempt
    budget is spent.
    """
    attempt = job_claim(job_id)
    if attempt is None:
        status = IngestionJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
        return JobOutcome(job_id, status or "MISSING")
    clock = _StageClock()
    try:
        _advance(job_id, attempt, Status.PARSING)  # a document deleted while its job waited is not parsed
        job = IngestionJob.objects.select_related("version__document").get(pk=job_id)
        version = job.version
        data = blob_read(version.sha256)
        parsed = parse(data)
        text = full_text(parsed)
        _passages_fit(len(text) // (_CHARS_PER_TOKEN_AT_MOST * (settings.CAIRN_CHUNK_TOKENS - settings.CAIRN_CHUNK_OVERLAP)),
                      "would make at least")
        _advance(job_id, attempt, Status.PARSING, status=Status.CHUNKING, detail="Splitting into passages",
                 parse_seconds=clock.lap())
        DocumentVersion.objects.unrestricted(WORKER).filter(pk=version.pk).update(
            kind=parsed.kind, text=text, parsed_title=parsed.title[:500], page_count=parsed.page_count
        )
        embedder = index.active_embedder()
        drafts = chunk_document(
            parsed, embedder.tokenizer,
            size_tokens=settings.CAIRN_CHUNK_TOKENS, overlap_tokens=settings.CAIRN_CHUNK_OVERLAP,
        )
        if not drafts:
            raise ParseError("The document contains no text to index.", reason="no_text")
        _passages_fit(len(drafts), "makes")
        total = len(drafts)
        _advance(job_id, attempt, Status.CHUNKING, status=Status.EMBEDDING,
                 detail=f"Embedding 0 of {total} passages", progress=0.0, chunk_seconds=clock.lap())
        vectors = _embed(job_id, attempt, drafts, version, embedder, progress)
        _store_chunks(job_id, attempt, version, drafts, vectors, embedder.model_id, clock=clock)
    except LostClaim:
        log.info("job %s: claim lost, another worker owns it now", job_id)
        return JobOutcome(job_id, "LOST")
    except Cancelled:
        message = "Stopped: the document was deleted while it was being processed."
        _fail(job_id, attempt, message, FailureReason.CANCELLED)
        return JobOutcome(job_id, Status.FAILED, message)
    except ParseError as exc:
        _fail(job_id, attempt, str(exc), exc.reason)
        return JobOutcome(job_id, Status.FAILED, str(exc))
    except Exception as exc:
        log.exception("job %s: attempt %s failed", job_id, attempt)
        return _retry_or_fail(job_id, attempt, exc)
    return JobOutcome(job_id, Status.EMBEDDING)


def _passages_fit(count: int, verb: str) -> None:
    """Refuse a document of more passages than ``CAIRN_MAX_PASSAGES_PER_DOCUMENT`` (a clear FAILED reason)."""
    limit = settings.CAIRN_MAX_PASSAGES_PER_DOCUMENT
    if count > limit:
        raise ParseError(f"The document {verb} {count:,} passages, more than the limit of {limit:,} per document "
                         "(CAIRN_MAX_PASSAGES_PER_DOCUMENT).", reason="too_many_passages")


def _embed(job_id: int, attempt: int, drafts: list[ChunkDraft], version: DocumentVersion, embedder: Embedder,
           progress: ProgressCallback | None) -> np.ndarray:
    title = version.document.title if not version.parsed_title else version.parsed_title
    texts = [index_text(d.text, d.heading, title) for d in drafts]
    batch = index.embed_batch_size(embedder)
    # Larger slices than the model batch keep the per-slice DB heartbeat cheap.
    step = max(batch * 4, 256)
    parts = []
    total = len(texts)
    for start in range(0, total, step):
        parts.append(embedder.encode(texts[start:start + step], batch_size=batch))
        done = min(start + step, total)
        _advance(job_id, attempt, Status.EMBEDDING, progress=done / total,
                 detail=f"Embedding {done} of {total} passages")
        if progress is not None:
            progress("embedding", done, total)
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)


def _store_chunks(job_id: int, attempt: int, version: DocumentVersion, drafts: list[ChunkDraft],
                  vectors: np.ndarray, model_id: str = "", *, clock: _StageClock | None = None) -> None:
    with transaction.atomic():
        # Chunks of an earlier, interrupted attempt are replaced, never duplicated.
        Chunk.objects.unrestricted(WORKER).filter(version=version).delete()
        start = chunk_ids_reserve(len(drafts))
        Chunk.objects.unrestricted(WORKER).bulk_create(
            [
                Chunk(
                    id=start + i,
                    version_id=version.pk,
                    document_id=version.document_id,
                    ordinal=draft.ordinal,
                    text=draft.text,
                    page=draft.page,
                    heading=draft.heading[:500],
                    char_start=draft.char_start,
                    char_end=draft.char_end,
                    token_count=draft.token_count,
                    embedding=vectors[i].tobytes(),
                    embedding_model=model_id,
                )
                for i, draft in enumerate(drafts)
            ],
            batch_size=500,
        )
        DocumentVersion.objects.unrestricted(WORKER).filter(pk=version.pk).update(chunk_id_start=start, chunk_count=len(drafts))
        _advance(job_id, attempt, Status.EMBEDDING, ready_to_index=True, progress=1.0,
                 detail="Waiting for the index writer", embedding_model=model_id,
                 embed_seconds=clock.lap() if clock is not None else None)


def _retry_or_fail(job_id: int, attempt: int, exc: Exception) -> JobOutcome:
    max_attempts = IngestionJob.objects.filter(pk=job_id).values_list("max_attempts", flat=True).first() or 1
    message = f"{type(exc).__name__}: {exc}"[:500]
    if attempt >= max_attempts:
        error = f"Processing failed after {attempt} attempts. Last error: {message}"
        _fail(job_id, attempt, error, FailureReason.ERRORS)
        return JobOutcome(job_id, Status.FAILED, error)
    now = timezone.now()
    IngestionJob.objects.filter(pk=job_id, attempts=attempt, status__in=IngestionJob.ACTIVE).update(
        status=Status.PENDING, error=f"Attempt {attempt} failed, will retry: {message}",
        detail="Waiting to retry", updated_at=now, ready_to_index=False,
    )
    return JobOutcome(job_id, Status.PENDING, message, retry_in=float(min(300, 5 * 2 ** attempt)))


@dataclass(frozen=True)
class ReapResult:
    requeued: list[int]
    failed: list[int]
    pending: list[int]
    index_needed: bool


def jobs_reap(*, stuck_after: float | None = None) -> ReapResult:
    """Find jobs whose worker died or whose message was lost, and set them going again.

    A stuck job goes back to PENDING while it has attempts left, else ends
    FAILED — so a poison document that kills its worker ends FAILED, not in a loop.
    """
    seconds = settings.CAIRN_JOB_STUCK_SECONDS if stuck_after is None else stuck_after
    cutoff = timezone.now() - dt.timedelta(seconds=seconds)
    requeued: list[int] = []
    failed: list[int] = []
    stuck = IngestionJob.objects.filter(status__in=IngestionJob.ACTIVE, ready_to_index=False, updated_at__lte=cutoff)
    for job in stuck.values("id", "status", "attempts", "max_attempts"):
        now = timezone.now()
        same = IngestionJob.objects.filter(pk=job["id"], status=job["status"], attempts=job["attempts"])
        if job["attempts"] >= job["max_attempts"]:
            if same.update(status=Status.FAILED, finished_at=now, updated_at=now, detail="",
                           failure_reason=FailureReason.WORKER_LOST, error=(
                f"Processing did not finish after {job['attempts']} attempts "
                "(the worker was lost or ran out of time)."
            )):
                failed.append(job["id"])
        elif same.update(status=Status.PENDING, updated_at=now, detail="Re-queued after a lost worker",
                         error="The previous attempt did not finish; retrying."):
            requeued.append(job["id"])
    pending = list(
        IngestionJob.objects.filter(status=Status.PENDING, updated_at__lte=cutoff).values_list("id", flat=True)
    )
    index_needed = IngestionJob.objects.filter(status=Status.EMBEDDING, ready_to_index=True).exists()
    return ReapResult(requeued=requeued, failed=failed, pending=pending, index_needed=index_needed)





def jobs_run_here(job_ids: list[int], *, index_every: int, progress: Callable[[int], None] | None = None) -> None:
    """Process these jobs in this thread, then index them (the command line's way, no worker needed).

    First what the periodic reaper does anyway: jobs an interrupted earlier
    run left mid-way (silent for ``CAIRN_JOB_STUCK_SECONDS``) go back to
    PENDING, so they run now.  An index pass every ``index_every`` jobs
    makes a large folder searchable as it goes, without rewriting the
    index once per file; ``progress`` is told how many jobs are done.
    """
    from ingestion.indexing import index_pass

    jobs_reap()
    for done, job_id in enumerate(job_ids, 1):
        run_ingest_job(job_id)
        if progress is not None:
            progress(done)
        if done % index_every == 0:
            index_pass()
    while index_pass().indexed_versions:
        pass
