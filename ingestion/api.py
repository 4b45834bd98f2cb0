"""The ingestion facade: what other apps' web layers and commands call.

The citation viewer's page images and passage boxes come from here too
(``ingestion.pdf_pages``: pdfium in a child process within a budget).
Uploads, re-processing and deletion go through here (``ingestion.services``),
so every one that starts or stops work also queues it; so do the command
line's ways to run jobs and index passes in the calling process.
"""

from __future__ import annotations

from django.db.models import Count

from ingestion.indexing import IndexPassResult, index_pass, index_rebuild
from ingestion.models import IngestionJob
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
