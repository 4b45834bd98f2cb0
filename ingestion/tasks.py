"""Celery tasks of the team shape — thin wrappers around ``ingestion.services``.

Every task here is idempotent (conditional claims, upserts keyed by chunk
id), which is what makes ``acks_late`` + ``reject_on_worker_lost`` safe: a
task whose worker died is delivered again and either finishes the work or
finds it already done.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from ingestion import api
from ingestion.indexing import index_pass
from ingestion.services import jobs_reap, run_ingest_job


@shared_task(
    name=api.TASK_INGEST,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.CAIRN_INGEST_SOFT_LIMIT,
    time_limit=settings.CAIRN_INGEST_HARD_LIMIT,
)
def ingest_process(job_id: int) -> str:
    outcome = run_ingest_job(int(job_id))
    if outcome.status == "EMBEDDING":
        api.dispatch(api.TASK_INDEX, None, 0)
    elif outcome.retry_in is not None:
        api.dispatch(api.TASK_INGEST, int(job_id), outcome.retry_in)
    return outcome.status


@shared_task(name=api.TASK_INDEX, acks_late=True, reject_on_worker_lost=True)
def index_apply() -> list[int]:
    return index_pass().indexed_versions


@shared_task(name=api.TASK_COMPACT, acks_late=True, reject_on_worker_lost=True)
def index_compact() -> list[int]:
    return index_pass(compact=True).purged_versions


@shared_task(name=api.TASK_REAP)
def jobs_reaper() -> dict[str, list[int]]:
    result = jobs_reap()
    for job_id in result.requeued + result.pending:
        api.dispatch(api.TASK_INGEST, job_id, 0)
    if result.index_needed:
        api.dispatch(api.TASK_INDEX, None, 0)
    return {"requeued": result.requeued, "failed": result.failed, "pending": result.pending}


@shared_task(name=api.TASK_AUDIT_RETENTION)
def audit_retention() -> dict[str, object]:
    """Remove audit events past ``CAIRN_AUDIT_RETENTION_YEARS``; writes an ``audit.retention`` event.

    Idempotent: a second run removes nothing more (and says so in its event).
    """
    from access.services import audit_retention_purge

    result = audit_retention_purge()
    return {"removed": result.removed, "through_id": result.through_id}
