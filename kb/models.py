"""Collections, documents and their versions, and the chunks that get indexed.

Documents, versions and chunks hold what users must not read past their
scope, so their default managers hand out ``RestrictedQuerySet``s: a query
of them refuses to run until it says whose scope it reads —
``.restrict(user, action)`` — or why it may read past every user's —
``.unrestricted(reason)``, for system code: workers, the index writer, the
audit review.  Related managers (``document.versions``,
``collection.documents``) are restricted the same way.  A forgotten scope is
an ``UnscopedQuery`` error in the first test that runs the path, not a leak.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.utils import timezone

if TYPE_CHECKING:
    from access.models import AnyUser

_M = TypeVar("_M", bound=models.Model)


class UnscopedQuery(RuntimeError):
    """A query of documents, versions or chunks ran without ``.restrict(user, action)`` or ``.unrestricted(reason)``."""


# What ``restrict`` does: kb.selectors installs the one implementation (the read and write scopes) at import.
# ``who``: a user, or a read scope already decided for one (kb.selectors.ReadScope).
Restrictor = Callable[[models.QuerySet[Any], Any, str], models.QuerySet[Any]]


class RestrictedQuerySet(models.QuerySet[_M]):
    """A queryset that refuses to be evaluated until it is scoped (see the module docstring).

    Actions: ``view`` (what the user may read), ``change`` (readable, in a
    collection the user edits), ``manage`` (live, in a collection the user
    edits, whatever the policies say about reading it).
    """

    restrictor: ClassVar[Restrictor | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scope: str | None = None

    def _clone(self) -> Self:  # every chained queryset is a clone: the scope travels with it
        clone = super()._clone()  # type: ignore[misc]  # QuerySet._clone is private, absent from django-stubs
        clone._scope = self._scope
        return clone

    def restrict(self, who: AnyUser | object, action: str = "view") -> Self:
        """Only the rows ``who`` (a user, or a decided read scope) may ``action``; deny by default."""
        if RestrictedQuerySet.restrictor is None:
            raise ImproperlyConfigured("kb.selectors installs the restriction (imported by KbConfig.ready)")
        scoped: Self = RestrictedQuerySet.restrictor(self, who, action)  # type: ignore[assignment]  # a clone of self
        scoped._scope = f"{action}: {who!r}"
        return scoped

    def unrestricted(self, reason: str) -> Self:
        """Every row, for system code that acts for no one user; ``reason`` says why (it is required)."""
        if not reason.strip():
            raise ValueError("say why this query may read past every user's scope")
        clone = self.all()
        clone._scope = f"unrestricted: {reason}"
        return clone

    def none(self) -> Self:
        clone = super().none()
        clone._scope = "nothing"  # an empty result reveals nothing
        return clone

    def _require_scope(self) -> None:
        if self._scope is None:
            raise UnscopedQuery(
                f"A {self.model.__name__} query ran unscoped: call .restrict(user, action) or, in system code, "
                ".unrestricted(reason) before evaluating it"
            )

    # Every way a queryset reaches the database goes through one of these.
    def _fetch_all(self) -> None:
        if self._result_cache is None:
            self._require_scope()
        super()._fetch_all()

    def iterator(self, chunk_size: int | None = None) -> Iterator[_M]:
        self._require_scope()
        return super().iterator(chunk_size)

    def count(self) -> int:
        self._require_scope()
        return super().count()

    def exists(self) -> bool:
        self._require_scope()
        return super().exists()

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self._require_scope()
        return super().aggregate(*args, **kwargs)

    def update(self, **kwargs: Any) -> int:
        self._require_scope()
        return super().update(**kwargs)

    def delete(self) -> tuple[int, dict[str, int]]:
        self._require_scope()
        return super().delete()

    def in_bulk(self, *args: Any, **kwargs: Any) -> dict[Any, _M]:
        self._require_scope()
        return super().in_bulk(*args, **kwargs)

    def contains(self, obj: models.Model) -> bool:
        self._require_scope()
        return super().contains(obj)

    def explain(self, *args: Any, **kwargs: Any) -> str:
        self._require_scope()
        return super().explain(*args, **kwargs)


class Collection(models.Model):
    """A set of documents shared as a unit (the unit of RBAC grants)."""

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="collections")
    created_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # The fusion ``cairn_tune`` chose from the golden set (``kb.tuning``); empty: the settings' default.
    fusion = models.JSONField(default=dict, blank=True)
    # The latest tuning run an owner started (status, then its table): ``kb.tuning.tuning_state``.
    fusion_tuning = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name", "id"]
        # Object permissions (django-guardian) granted per user or group; a role
        # is a set of them: viewer = view, editor = view + edit, owner = all three.
        # ``view_collection`` is Django's default permission.
        permissions = [
            ("edit_collection", "Upload, replace and delete documents"),
            ("own_collection", "Share the collection and change its policy"),
        ]

    def __str__(self) -> str:
        return self.name


class DocumentQuerySet(RestrictedQuerySet["Document"]):
    def live(self) -> Self:
        return self.filter(deleted_at__isnull=True)


class Document(models.Model):
    """A document in a collection; its content lives in versions.

    ``current_version`` is the version searches see; it changes only when a
    newer version is INDEXED, so a replaced document stays searchable while
    its new version is being processed.  Its chunk-id range is copied onto
    the document (``search_chunk_start`` / ``search_chunk_count``, set only
    by ``make_current``) so the ranges a search may read come from one
    covering index of this table, without a join to the versions.
    ``latest_version`` is the newest upload, whatever its state.  Deletion
    is a tombstone (``deleted_at``): gone from every read at once, purged
    from the index by compaction.
    """

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=255)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True, db_index=True)
    current_version = models.ForeignKey(
        "DocumentVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="current_for"
    )
    latest_version = models.ForeignKey(
        "DocumentVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    attributes = models.JSONField(default=dict, blank=True)
    search_chunk_start = models.BigIntegerField(null=True, blank=True, editable=False)
    search_chunk_count = models.PositiveIntegerField(default=0, editable=False)

    objects = DocumentQuerySet.as_manager()

    # What ``make_current`` changes: save(update_fields=Document.CURRENT_FIELDS).
    CURRENT_FIELDS = ("current_version", "search_chunk_start", "search_chunk_count")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["collection", "title"]),
            # Covers "live documents of these collections → their chunk-id ranges":
            # every search reads it for the readable set (benchmarks/search_api.py).
            models.Index(fields=["collection", "deleted_at", "search_chunk_start", "search_chunk_count"],
                         name="kb_document_search_idx"),
        ]

    def __str__(self) -> str:
        return self.title

    def make_current(self, version: DocumentVersion) -> None:
        """Make ``version`` the one searches see; the caller saves ``CURRENT_FIELDS``."""
        self.current_version = version
        self.search_chunk_start = version.chunk_id_start
        self.search_chunk_count = version.chunk_count if version.chunk_id_start is not None else 0


class DocumentVersion(models.Model):
    """One uploaded revision of a document: its bytes, extracted text and chunks.

    The bytes are stored content-addressed by ``sha256`` under the storage
    directory; the client's filename is kept only as display text.  The
    version's chunks have the contiguous ids
    ``[chunk_id_start, chunk_id_start + chunk_count)``, so "the chunks this
    user may read" is a short list of id ranges rather than a list of ids.
    """

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.BigIntegerField()
    kind = models.CharField(max_length=16, blank=True)
    original_name = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    text = models.TextField(blank=True)
    parsed_title = models.CharField(max_length=500, blank=True)
    page_count = models.PositiveIntegerField(null=True, blank=True)
    chunk_id_start = models.BigIntegerField(null=True, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    indexed_at = models.DateTimeField(null=True, blank=True)
    superseded_at = models.DateTimeField(null=True, blank=True)
    purged_at = models.DateTimeField(null=True, blank=True)

    objects = RestrictedQuerySet["DocumentVersion"].as_manager()

    class Meta:
        ordering = ["document_id", "number"]
        constraints = [models.UniqueConstraint(fields=["document", "number"], name="uniq_document_version")]

    def __str__(self) -> str:
        return f"{self.document_id} v{self.number}"


class Chunk(models.Model):
    """A passage of a document version: the unit of retrieval and citation.

    ``id`` is allocated in a block per version (``IdBlock``) and is the id
    FAISS and BM25 use.  ``char_start``/``char_end`` index into the
    version's ``text``.  ``embedding`` holds the float32 vector, so the index
    files can always be rebuilt from the database.
    """

    id = models.BigIntegerField(primary_key=True)
    version = models.ForeignKey(DocumentVersion, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="+")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    page = models.PositiveIntegerField(null=True, blank=True)
    heading = models.CharField(max_length=500, blank=True)
    char_start = models.PositiveIntegerField()
    char_end = models.PositiveIntegerField()
    token_count = models.PositiveIntegerField()
    embedding = models.BinaryField(null=True, blank=True)
    # The model that made ``embedding`` ("" for chunks stored before it was recorded): the index writer
    # re-embeds chunks whose model is not the index's, so an index never mixes two models' vectors.
    embedding_model = models.CharField(max_length=200, blank=True, default="")

    objects = RestrictedQuerySet["Chunk"].as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["version", "ordinal"])]


class IdBlock(models.Model):
    """A counter that hands out contiguous blocks of ids (see ``kb.services.chunk_ids_reserve``)."""

    name = models.CharField(max_length=32, primary_key=True)
    next_value = models.BigIntegerField(default=1)


class GoldenQuestion(models.Model):
    """A question of a collection's golden set and the documents a good search must return for it.

    Evaluating the set (``kb.golden``) runs each question through the same
    permission-scoped search users get and stores the metrics as an
    ``EvaluationRun``, so a re-index or model change can be compared with
    the run before it.
    """

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="golden_questions")
    question = models.TextField()
    expected_documents = models.ManyToManyField(Document, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.question[:80]


class EvaluationRun(models.Model):
    """One evaluation of a collection's golden set: mean metrics, per-question detail, and what produced them."""

    class Trigger(models.TextChoices):
        MANUAL = "manual", "On demand"
        REINDEX = "reindex", "After a re-index"
        MODEL_SWITCH = "model_switch", "After an embedding-model switch"

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="evaluation_runs")
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.MANUAL)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    embedding_model = models.CharField(max_length=200)
    reranker = models.CharField(max_length=200, blank=True)
    index_version = models.PositiveIntegerField(null=True, blank=True)
    fusion = models.CharField(max_length=100, blank=True)  # how the legs were fused, e.g. "convex minmax w=0.5"
    questions = models.PositiveIntegerField()
    ndcg10 = models.FloatField()
    recall10 = models.FloatField()
    mrr10 = models.FloatField()
    seconds = models.FloatField()
    details = models.JSONField(default=list, blank=True)  # one entry per question

    class Meta:
        ordering = ["-created_at", "-id"]


class Conversation(models.Model):
    """A person's thread of questions and answers (private to them), optionally scoped to a collection."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    collection = models.ForeignKey(Collection, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    title = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["user", "-updated_at"], name="conversation_user_recent")]


class ConversationTurn(models.Model):
    """One question of a conversation, what it was rewritten to for retrieval, and the answer with its citations."""

    class State(models.TextChoices):
        ANSWERED = "answered", "Answered"
        STREAMING = "streaming", "Being answered"
        STOPPED = "stopped", "Stopped before the end"
        FAILED = "failed", "Failed"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    question = models.TextField()
    standalone_question = models.TextField()
    collection = models.ForeignKey(Collection, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=16, choices=State.choices, default=State.ANSWERED)
    # The answer as /api/v1/ask returns it (answer, citations, passages, backend, …); empty until it exists.
    answer = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]


class AnswerFeedback(models.Model):
    """A reader's thumbs up or down on an answer, with what it was about, frozen when it was given.

    ``passages`` is a snapshot (``number``, ``chunk_id``, ``document_id``, ``title``, ``text``) of the
    passages the answer cited, taken from the server's own records (the conversation turn, or the
    chunks as stored), never from the client; the collection's owners export it (``kb.feedback``)
    in the golden-set import's shape.
    """

    class Rating(models.TextChoices):
        UP = "up", "Helpful"
        DOWN = "down", "Not helpful"

    MAX_COMMENT = 2000

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="feedback")
    turn = models.ForeignKey(ConversationTurn, null=True, blank=True, on_delete=models.SET_NULL, related_name="feedback")
    question = models.TextField()
    answer = models.TextField(blank=True)
    model = models.CharField(max_length=200, blank=True)
    passages = models.JSONField(default=list, blank=True)
    rating = models.CharField(max_length=4, choices=Rating.choices)
    comment = models.TextField(blank=True, max_length=MAX_COMMENT)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["collection", "created_at"], name="feedback_collection_time")]
