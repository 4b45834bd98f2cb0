"""The ingestion facade: what other apps' web layers and commands call.

The citation viewer's page images and passage boxes come from here too
(``ingestion.pdf_pages``: pdfium in a child process within a budget).
Uploads, re-processing and deletion go through here (``ingestion.services``),
so every one that starts or stops work also queues it; so do the command
line's ways to run jobs and index passes in the calling process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import Count, Q, Sum

from ingestion.indexing import IndexPassResult, index_pass, index_rebuild
from ingestion.models import IngestionJob
from ingestion.parsers import SUPPORTED_KINDS
from ingestion.pdf_pages import PageBoxes, PageError, page_boxes, page_png
from ingestion.pipeline import jobs_run_here
from ingestion.services import (
    collection_delete,
    corpus_ingest,
    document_delete,
    document_reprocess,
    document_upload,
)
from ingestion.tasks import deferred, dispatch, enqueue_tune, local_worker
from kb.services import UploadResult

__all__ = [
    "IndexPassResult",
    "PageBoxes",
    "PageError",
    "SUPPORTED_KINDS",
    "UploadResult",
    "collection_delete",
    "corpus_ingest",
    "deferred",
    "dispatch",
    "enqueue_tune",
    "document_delete",
    "document_reprocess",
    "document_upload",
    "index_pass",
    "index_rebuild",
    "job_counts",
    "job_failure_counts",
    "job_stage_histograms",
    "jobs_run_here",
    "local_worker",
    "page_boxes",
    "page_png",
]


def job_counts() -> dict[str, int]:
    """Ingestion jobs by state, every state present (0 when none): what ``/metrics`` reports."""
    counts = dict.fromkeys(IngestionJob.Status.values, 0)
    for row in IngestionJob.objects.values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


def job_failure_counts() -> dict[str, int]:
    """FAILED jobs by reason code, every reason present (0 when none); a job failed before reasons were
    recorded counts as ``unknown``."""
    counts = dict.fromkeys(IngestionJob.FailureReason.values, 0)
    for row in (IngestionJob.objects.filter(status=IngestionJob.Status.FAILED)
                .values("failure_reason").annotate(n=Count("id"))):
        reason = row["failure_reason"] or "unknown"
        counts[reason] = counts.get(reason, 0) + row["n"]
    return counts


def job_stage_histograms(buckets: Sequence[float]) -> dict[str, tuple[list[int], float, int]]:
    """For each stage, over every job that completed it: (cumulative counts ≤ each bound, sum, count).

    One aggregate query for all stages and bounds, so a scrape costs one round trip whatever the number of jobs.
    """
    aggregates: dict[str, Any] = {}
    for stage in IngestionJob.STAGES:
        field = f"{stage}_seconds"
        aggregates[f"{stage}_n"] = Count("id", filter=Q(**{f"{field}__isnull": False}))
        aggregates[f"{stage}_sum"] = Sum(field)
        for i, bound in enumerate(buckets):
            aggregates[f"{stage}_{i}"] = Count("id", filter=Q(**{f"{field}__lte": bound}))
    row = IngestionJob.objects.aggregate(**aggregates)
    return {
        stage: ([int(row[f"{stage}_{i}"]) for i in range(len(buckets))], float(row[f"{stage}_sum"] or 0.0),
                int(row[f"{stage}_n"]))
        for stage in IngestionJob.STAGES
    }
