"""Ingestion jobs: the state machine every uploaded version goes through."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from kb.models import DocumentVersion


class IngestionJob(models.Model):
    """The processing state of one document version.

    PENDING → PARSING → CHUNKING → EMBEDDING → INDEXED, or FAILED with a
    readable ``error``.  Each step is claimed with a conditional update on
    ``(status, attempts)``: a worker that lost its claim (the reaper re-queued
    the job, another worker took it) finds its next transition refused and
    stops, so running a job twice never produces duplicate chunks.
    ``ready_to_index`` marks an EMBEDDING job whose vectors are all stored and
    that waits for the single index writer.
    """

    class Status(models.TextChoices):
        PENDING = "PENDING"
        PARSING = "PARSING"
        CHUNKING = "CHUNKING"
        EMBEDDING = "EMBEDDING"
        INDEXED = "INDEXED"
        FAILED = "FAILED"

    ACTIVE = (Status.PARSING, Status.CHUNKING, Status.EMBEDDING)

    class FailureReason(models.TextChoices):
        """Why a job ended FAILED, as a stable code (``error`` has the readable message); ``/metrics`` counts these."""

        UNREADABLE = "unreadable"  # the parser refused the file (damaged, encrypted, unsupported)
        NO_TEXT = "no_text"  # nothing to index (empty, a scanned PDF without OCR)
        TIME_BUDGET = "time_budget"  # CAIRN_PARSE_TIMEOUT
        MEMORY_BUDGET = "memory_budget"  # CAIRN_PARSE_MAX_MB
        TOO_MANY_PASSAGES = "too_many_passages"  # CAIRN_MAX_PASSAGES_PER_DOCUMENT
        CANCELLED = "cancelled"  # the document was deleted while it was processed
        WORKER_LOST = "worker_lost"  # the reaper gave up on a job whose worker kept dying or hanging
        ERRORS = "errors"  # transient errors until the attempts ran out

    # Seconds each stage took on the attempt that completed it (None until it did): /metrics' stage durations.
    STAGES = ("parse", "chunk", "embed", "index")

    version = models.OneToOneField(DocumentVersion, on_delete=models.CASCADE, related_name="job")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    detail = models.CharField(max_length=200, blank=True)
    progress = models.FloatField(default=0.0)
    ready_to_index = models.BooleanField(default=False)
    # The embedding model the chunks were embedded with; the index writer re-embeds them
    # if the active model changed in between (blue-green model switch).
    embedding_model = models.CharField(max_length=200, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    error = models.TextField(blank=True)
    failure_reason = models.CharField(max_length=32, choices=FailureReason.choices, blank=True, default="")
    parse_seconds = models.FloatField(null=True, blank=True)
    chunk_seconds = models.FloatField(null=True, blank=True)
    embed_seconds = models.FloatField(null=True, blank=True)
    index_seconds = models.FloatField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["status", "ready_to_index"])]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.status})"
