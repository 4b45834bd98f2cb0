"""The ingestion pipeline: a job's state machine — claim, parse, chunk, embed, hand over to the index writer.

Idempotent and safe under ``acks_late``: every transition is a conditional
update on ``(status, attempts)``; a worker whose claim was taken over finds
its next update refused (``LostClaim``) and stops without writing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Field, Q, Value, When
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
    return _claim(job_id)[0]


def _claim(job_id: int) -> tuple[int | None, str]:
    """``job_claim``, and the job's status when it was not claimed (``MISSING`` for no such job)."""
    job = IngestionJob.objects.filter(pk=job_id).values("status", "attempts", "max_attempts").first()
    if job is None or job["status"] != Status.PENDING:
        # Already claimed, often by a batch that took it along before its own message came.
        return None, job["status"] if job is not None else "MISSING"
    attempt = job["attempts"] + 1
    now = timezone.now()
    if attempt > job["max_attempts"]:
        IngestionJob.objects.filter(pk=job_id, status=Status.PENDING, attempts=job["attempts"]).update(
            status=Status.FAILED, finished_at=now, updated_at=now, detail="",
            error=f"Gave up after {job['max_attempts']} attempts.", failure_reason=FailureReason.ERRORS,
        )
        return None, Status.FAILED
    claimed = IngestionJob.objects.filter(pk=job_id, status=Status.PENDING, attempts=job["attempts"]).update(
        status=Status.PARSING, attempts=attempt, worker=WORKER_NAME[:200], started_at=now, updated_at=now,
        error="", detail="Reading the file", progress=0.0, ready_to_index=False, failure_reason="",
    )
    if claimed:
        return attempt, Status.PARSING
    return None, IngestionJob.objects.filter(pk=job_id).values_list("status", flat=True).first() or "MISSING"


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
    """Process one job, alone, end to end up to "ready for the index writer".

    Parse errors are permanent (FAILED at once, with the parser's message);
    anything else is treated as transient and retried until the attempt
    budget is spent.
    """
    return run_ingest_batch(job_id, mates=0, progress=progress)[0]


def run_ingest_batch(job_id: int, *, mates: int | None = None, among: Sequence[int] | None = None,
                     progress: ProgressCallback | None = None) -> list[JobOutcome]:
    """Process a job and, if it is small, up to ``mates`` other small jobs waiting meanwhile, as one batch.

    Each document is read, parsed and chunked on its own; then the passages
    of all of them are embedded together (one ``encode`` over their union:
    the few passages of one small document never fill the model's batch) and
    their chunks stored in one transaction.  A job stays a job throughout:
    its own claim, state, progress, budgets and FAILED reason; a document
    that fails, is deleted or whose claim is lost leaves the batch without
    taking the others with it.  Only jobs on their first attempt join a
    batch (a document that made a worker crash runs alone next time), and
    only documents of at most ``CAIRN_INGEST_BATCH_MAX_KB``.

    ``mates`` defaults to ``CAIRN_INGEST_BATCH`` - 1; ``among`` limits the
    mates to those job ids.  Returns the outcome of every job claimed, the
    given one first.  Idempotent and safe under ``acks_late``, as each job is.
    """
    attempt, status = _claim(job_id)
    if attempt is None:
        return [JobOutcome(job_id, status)]
    claims = [_Claim(job_id, attempt)]
    more = settings.CAIRN_INGEST_BATCH - 1 if mates is None else mates
    if more > 0 and attempt == 1:
        claims += [_Claim(mate, 1) for mate in _mates_claim(job_id, more, among)]
    try:
        _process(claims, progress)
    except SoftTimeLimitExceeded as exc:
        # The task's time is up: what is not finished is retried (or FAILED), each job on its own count.
        for claim in _live(claims):
            claim.outcome = _retry_or_fail(claim.job_id, claim.attempt, exc)
    return [claim.outcome or JobOutcome(claim.job_id, Status.EMBEDDING) for claim in claims]


@dataclass(eq=False)
class _Claim:
    """One claimed job on its way to "ready for the index writer".

    ``status`` is the state its row was last moved to by this worker;
    ``outcome`` is set when the job leaves its batch (failed, cancelled,
    retried later, claim lost).
    """

    job_id: int
    attempt: int
    status: str = Status.PARSING
    clock: _StageClock = field(default_factory=_StageClock)
    seconds: dict[str, float] = field(default_factory=dict)
    version: DocumentVersion | None = None
    drafts: list[ChunkDraft] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    outcome: JobOutcome | None = None


def _live(claims: list[_Claim]) -> list[_Claim]:
    return [claim for claim in claims if claim.outcome is None]


def _mates_claim(lead: int, count: int, among: Sequence[int] | None) -> list[int]:
    """Claim (PENDING → PARSING, attempt 1) up to ``count`` small jobs waiting for their first attempt, to be
    processed with ``lead``; none if ``lead`` itself is not small.  Oldest first; on PostgreSQL, rows another
    worker is claiming are skipped, not waited for."""
    small = settings.CAIRN_INGEST_BATCH_MAX_BYTES
    if not IngestionJob.objects.filter(pk=lead, version__size__lte=small).exists():
        return []
    waiting = (IngestionJob.objects.filter(status=Status.PENDING, attempts=0, version__size__lte=small,
                                           version__document__deleted_at__isnull=True)
               .exclude(pk=lead).order_by("id"))
    if among is not None:
        waiting = waiting.filter(pk__in=list(among))
    now = timezone.now()
    try:
        with transaction.atomic():
            ids = list(waiting.select_for_update(skip_locked=True, of=("self",)).values_list("id", flat=True)[:count])
            claimed = IngestionJob.objects.filter(pk__in=ids, status=Status.PENDING, attempts=0).update(
                status=Status.PARSING, attempts=1, worker=WORKER_NAME[:200], started_at=now, updated_at=now,
                error="", detail="Reading the file", progress=0.0, ready_to_index=False, failure_reason="",
            )
            if claimed != len(ids):  # the rows are locked (or the database serialises writers): not expected
                raise _BatchChanged
    except _BatchChanged:
        return []
    return ids


class _BatchChanged(Exception):
    """A write for several jobs found one of them changed (deleted, claimed elsewhere); it is rolled back."""


def _advance_each(claims: list[_Claim], fields_of: Callable[[_Claim], Mapping[str, object]] | None = None,
                  **fields: object) -> list[tuple[_Claim, Exception]]:
    """``_advance`` for several claimed jobs in one UPDATE: each from the state it is in (``claim.status``) on its
    own attempt, its document not deleted; ``fields_of`` gives each job's own values (``CASE … WHEN id``).

    Returns the claims that did not advance, each with why (``Cancelled`` or ``LostClaim``); the others are in
    their new state.
    """
    if not claims:
        return []
    fields.setdefault("updated_at", timezone.now())
    own = {claim.job_id: fields_of(claim) for claim in claims} if fields_of is not None else {}
    for name in {name for values in own.values() for name in values}:
        column = IngestionJob._meta.get_field(name)
        assert isinstance(column, Field)
        fields[name] = Case(*(When(pk=job_id, then=Value(values[name], output_field=column))
                              for job_id, values in own.items() if name in values),
                            default=F(name), output_field=column)
    which = Q()
    for (attempt, status), ids in _groups(claims).items():  # usually one: a batch moves on together
        which |= Q(pk__in=ids, attempts=attempt, status=status)
    updated = IngestionJob.objects.filter(which, version__document__deleted_at__isnull=True).update(**fields)
    new_status = fields.get("status")
    left: list[tuple[_Claim, Exception]] = []
    if updated < len(claims):
        rows = {row["id"]: row for row in IngestionJob.objects.filter(pk__in=[c.job_id for c in claims]).values(
            "id", "status", "attempts", "version__document__deleted_at")}
        for claim in claims:
            row = rows.get(claim.job_id)
            if row is not None and row["version__document__deleted_at"] is not None:
                left.append((claim, Cancelled(claim.job_id)))
            elif row is None or row["attempts"] != claim.attempt or row["status"] != (new_status or claim.status):
                left.append((claim, LostClaim(claim.job_id)))
    leaving = {id(claim) for claim, _ in left}
    if isinstance(new_status, str):
        for claim in claims:
            if id(claim) not in leaving:
                claim.status = new_status
    return left


def _groups(claims: list[_Claim]) -> dict[tuple[int, str], list[int]]:
    groups: dict[tuple[int, str], list[int]] = {}
    for claim in claims:
        groups.setdefault((claim.attempt, claim.status), []).append(claim.job_id)
    return groups


def _advance_or_leave(claims: list[_Claim], fields_of: Callable[[_Claim], Mapping[str, object]] | None = None,
                      **fields: object) -> None:
    """``_advance_each``; the jobs that did not advance leave the batch (cancelled, claim lost)."""
    for claim, reason in _advance_each(claims, fields_of, **fields):
        _settle(claim, reason)


@contextlib.contextmanager
def _step(claim: _Claim) -> Iterator[None]:
    """Run one step of one job of a batch: what goes wrong ends that job (its outcome), not the batch."""
    try:
        yield
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:
        _settle(claim, exc)


def _settle(claim: _Claim, exc: Exception) -> None:
    """The outcome of a job whose step raised ``exc``: lost, cancelled, FAILED (parse errors, budgets) or retried."""
    if isinstance(exc, LostClaim):
        log.info("job %s: claim lost, another worker owns it now", claim.job_id)
        claim.outcome = JobOutcome(claim.job_id, "LOST")
    elif isinstance(exc, Cancelled):
        message = "Stopped: the document was deleted while it was being processed."
        _fail(claim.job_id, claim.attempt, message, FailureReason.CANCELLED)
        claim.outcome = JobOutcome(claim.job_id, Status.FAILED, message)
    elif isinstance(exc, ParseError):
        _fail(claim.job_id, claim.attempt, str(exc), exc.reason)
        claim.outcome = JobOutcome(claim.job_id, Status.FAILED, str(exc))
    else:
        log.error("job %s: attempt %s failed", claim.job_id, claim.attempt, exc_info=exc)
        claim.outcome = _retry_or_fail(claim.job_id, claim.attempt, exc)


# While a batch's documents are parsed, the jobs parsed so far are moved on (and the others' rows touched, which
# the reaper reads as signs of life) at least this often.
_FLUSH_SECONDS = 2.0


def _process(claims: list[_Claim], progress: ProgressCallback | None) -> None:
    """Parse and chunk each job, embed all their passages together, store their chunks."""
    jobs = IngestionJob.objects.select_related("version__document").in_bulk([claim.job_id for claim in claims])
    for claim in claims:
        job = jobs.get(claim.job_id)
        if job is None or job.status != claim.status or job.attempts != claim.attempt:
            _settle(claim, LostClaim(claim.job_id))
        elif job.version.document.deleted_at is not None:  # a document deleted while its job waited is not parsed
            _settle(claim, Cancelled(claim.job_id))
        else:
            claim.version = job.version
    alone = len(claims) == 1
    embedder: Embedder | None = None
    parsed: list[_Claim] = []
    flushed = time.monotonic()
    for claim in _live(claims):
        with _step(claim):
            if embedder is None:
                embedder = index.active_embedder()
            _parse_and_chunk(claim, embedder, alone=alone)
            parsed.append(claim)
        if time.monotonic() - flushed > _FLUSH_SECONDS:
            _to_embedding([c for c in parsed if c.outcome is None])
            parsed, flushed = [], time.monotonic()
            _advance_or_leave([c for c in _live(claims) if c.status == Status.PARSING])
    _to_embedding([c for c in parsed if c.outcome is None])
    live = _live(claims)
    if not live or embedder is None:
        return
    try:
        _embed(live, embedder, progress)
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:
        if len(live) == 1:
            _settle(live[0], exc)
            return
        # Which document made the batch fail?  Each is embedded on its own, so that only it fails.
        log.warning("embedding %d documents together failed; embedding each on its own", len(live), exc_info=True)
        for claim in live:
            with _step(claim):
                _embed([claim], embedder, None)
    _store(_live(claims), embedder.model_id)


def _parse_and_chunk(claim: _Claim, embedder: Embedder, *, alone: bool) -> None:
    """A document's text and passages (its version records the text).  A job processed alone is moved to
    CHUNKING between the two; a batch's jobs move on together (``_to_embedding``)."""
    version = claim.version
    assert version is not None
    claim.clock = _StageClock()
    data = blob_read(version.sha256)
    parsed = parse(data)
    text = full_text(parsed)
    _passages_fit(len(text) // (_CHARS_PER_TOKEN_AT_MOST * (settings.CAIRN_CHUNK_TOKENS - settings.CAIRN_CHUNK_OVERLAP)),
                  "would make at least")
    claim.seconds["parse_seconds"] = claim.clock.lap()
    if alone:
        _advance(claim.job_id, claim.attempt, Status.PARSING, status=Status.CHUNKING, detail="Splitting into passages",
                 parse_seconds=claim.seconds.pop("parse_seconds"))
        claim.status = Status.CHUNKING
    version.kind, version.text, version.parsed_title, version.page_count = (
        parsed.kind, text, parsed.title[:500], parsed.page_count)
    drafts = chunk_document(
        parsed, embedder.tokenizer,
        size_tokens=settings.CAIRN_CHUNK_TOKENS, overlap_tokens=settings.CAIRN_CHUNK_OVERLAP,
    )
    if not drafts:
        raise ParseError("The document contains no text to index.", reason="no_text")
    _passages_fit(len(drafts), "makes")
    claim.seconds["chunk_seconds"] = claim.clock.lap()
    # Embedded with the title the index writer and the model switch use too (kb.retrieval.passages).
    title = version.parsed_title or version.document.title
    claim.drafts = drafts
    claim.texts = [index_text(d.text, d.heading, title) for d in drafts]


def _to_embedding(claims: list[_Claim]) -> None:
    """Parsed and chunked: each version's text stored, each job moved to EMBEDDING (with its stage times)."""
    if not claims:
        return
    _advance_or_leave(claims, lambda claim: {"detail": f"Embedding 0 of {len(claim.drafts)} passages", **claim.seconds},
                      status=Status.EMBEDDING, progress=0.0)
    versions = [claim.version for claim in _live(claims) if claim.version is not None]
    DocumentVersion.objects.unrestricted(WORKER).bulk_update(versions, ["kind", "text", "parsed_title", "page_count"])


def _passages_fit(count: int, verb: str) -> None:
    """Refuse a document of more passages than ``CAIRN_MAX_PASSAGES_PER_DOCUMENT`` (a clear FAILED reason)."""
    limit = settings.CAIRN_MAX_PASSAGES_PER_DOCUMENT
    if count > limit:
        raise ParseError(f"The document {verb} {count:,} passages, more than the limit of {limit:,} per document "
                         "(CAIRN_MAX_PASSAGES_PER_DOCUMENT).", reason="too_many_passages")


def _embed(claims: list[_Claim], embedder: Embedder, progress: ProgressCallback | None) -> None:
    """The passages of ``claims`` embedded together, in slices.  After each slice every job in it records its
    progress, which also finds a deleted document: its job leaves, its remaining passages are not embedded."""
    batch = index.embed_batch_size(embedder)
    # Larger slices than the model batch keep the per-slice DB heartbeat cheap.
    step = max(batch * 4, 256)
    for claim in claims:
        claim.vectors = []
    queue = [(claim, i) for claim in claims for i in range(len(claim.texts))]
    total = len(queue)
    for start in range(0, total, step):
        piece = [(claim, i) for claim, i in queue[start:start + step] if claim.outcome is None]
        if not piece:
            continue
        vectors = embedder.encode([claim.texts[i] for claim, i in piece], batch_size=batch)
        for (claim, _), vector in zip(piece, vectors, strict=True):
            claim.vectors.append(vector)
        touched = list(dict.fromkeys(claim for claim, _ in piece))
        _advance_or_leave(touched, lambda claim: {
            "progress": len(claim.vectors) / len(claim.texts),
            "detail": f"Embedding {len(claim.vectors)} of {len(claim.texts)} passages",
        })
        if progress is not None and _live(claims):
            progress("embedding", min(start + step, total), total)


def _store(claims: list[_Claim], model_id: str) -> None:
    """Each job's chunks and vectors stored, the job ready for the index writer: the whole batch in one
    transaction, or each job in its own when one of them changed meanwhile (deleted, claim lost)."""
    for claim in claims:
        claim.seconds = {"embed_seconds": claim.clock.lap()}
    if len(claims) > 1:
        try:
            with transaction.atomic():
                _store_chunks(claims, model_id)
            return
        except _BatchChanged:
            pass
    for claim in claims:
        with _step(claim):
            with transaction.atomic():
                _store_chunks([claim], model_id)


def _store_chunks(claims: list[_Claim], model_id: str) -> None:
    """Inside a transaction: the chunks of ``claims`` (each version its own block of ids) and their jobs made
    ready; raises ``_BatchChanged``, or for one job why it did not advance, so that the caller rolls back."""
    versions = [claim.version for claim in claims if claim.version is not None]
    # Chunks of an earlier, interrupted attempt are replaced, never duplicated.
    Chunk.objects.unrestricted(WORKER).filter(version__in=versions).delete()
    start = chunk_ids_reserve(sum(len(claim.drafts) for claim in claims))
    chunks: list[Chunk] = []
    for claim in claims:
        version = claim.version
        assert version is not None and len(claim.vectors) == len(claim.drafts)
        version.chunk_id_start, version.chunk_count = start + len(chunks), len(claim.drafts)
        vectors = np.stack(claim.vectors).astype(np.float32, copy=False)
        chunks += [
            Chunk(
                id=version.chunk_id_start + i,
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
            for i, draft in enumerate(claim.drafts)
        ]
    Chunk.objects.unrestricted(WORKER).bulk_create(chunks, batch_size=500)
    DocumentVersion.objects.unrestricted(WORKER).bulk_update(versions, ["chunk_id_start", "chunk_count"])
    left = _advance_each(claims, lambda claim: claim.seconds, ready_to_index=True,
                         progress=1.0, detail="Waiting for the index writer", embedding_model=model_id)
    if left:
        raise left[0][1] if len(claims) == 1 else _BatchChanged()


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
    PENDING, so they run now.  Small documents are embedded in batches, as
    the workers do (``run_ingest_batch``, with mates from the jobs next in
    ``job_ids``).  An index pass every ``index_every`` jobs makes a large
    folder searchable as it goes, without rewriting the index once per file;
    ``progress`` is told how many jobs are done.
    """
    from ingestion.indexing import index_pass

    jobs_reap()
    done: set[int] = set()
    indexed_at = 0
    window = 4 * settings.CAIRN_INGEST_BATCH
    for position, job_id in enumerate(job_ids):
        if job_id in done:
            continue
        outcomes = run_ingest_batch(job_id, among=job_ids[position + 1:position + 1 + window])
        done.update(outcome.job_id for outcome in outcomes)
        if progress is not None:
            progress(len(done))
        if len(done) - indexed_at >= index_every:
            index_pass()
            indexed_at = len(done)
    while index_pass().indexed_versions:
        pass
