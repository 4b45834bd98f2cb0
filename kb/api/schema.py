"""The OpenAPI description of ``/api/v1/`` (drf-spectacular): what each operation takes and answers.

The views stay plain ``APIView``s that build their JSON by hand (``*_out``
functions); this module describes those shapes once, as serializers used
only for the schema, and attaches them to the views through
``OpenApiViewExtension`` — so the schema is generated from the code without
the views carrying documentation decorators.  Every operation also answers
the one error shape (``Error``, ``kb.api.errors.error_body``) for any status
it does not list (the ``default`` response, added by ``errors_everywhere``).

``tests/kb/test_openapi.py`` checks that every ``/api/v1/`` route is here
and runs schemathesis against a live server: no 5xx, no answer that
contradicts the schema.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers

from kb.api import audit, conversations, feedback, golden, keys, sharing, tuning, viewer, views

# --- shapes ------------------------------------------------------------------------------------


class ErrorDetail(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable: invalid, not_found, forbidden, unavailable, …")
    message = serializers.CharField(help_text="For people: what went wrong and what to do.")
    details = serializers.JSONField(help_text="Per-field messages or other context; may be empty.")


class Error(serializers.Serializer):
    error = ErrorDetail()


class Collection(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class CollectionList(serializers.Serializer):
    results = Collection(many=True)


class Document(serializers.Serializer):
    id = serializers.IntegerField()
    collection = serializers.IntegerField()
    title = serializers.CharField()
    status = serializers.ChoiceField(choices=["PENDING", "RUNNING", "INDEXED", "FAILED", "DELETED", "CANCELLED"],
                                     help_text="Processing state of the latest version.")
    error = serializers.CharField(allow_blank=True)
    detail = serializers.CharField(allow_blank=True)
    progress = serializers.FloatField(min_value=0, max_value=1)
    attempts = serializers.IntegerField()
    version = serializers.IntegerField(allow_null=True)
    searchable_version = serializers.IntegerField(allow_null=True)
    kind = serializers.CharField(allow_blank=True)
    size = serializers.IntegerField()
    pages = serializers.IntegerField(allow_null=True)
    chunks = serializers.IntegerField()
    sha256 = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class UploadedDocument(Document):
    duplicate = serializers.BooleanField(help_text="True: the same bytes were there already (200, not 201).")


class Version(serializers.Serializer):
    number = serializers.IntegerField()
    size = serializers.IntegerField()
    kind = serializers.CharField(allow_blank=True)
    original_name = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField()
    status = serializers.CharField()
    searchable = serializers.BooleanField(help_text="The version search and answers use.")
    bytes_kept = serializers.BooleanField(help_text="Its file is still stored (it can be restored).")


class VersionList(serializers.Serializer):
    results = Version(many=True)


class DocumentList(serializers.Serializer):
    results = Document(many=True)


class Upload(serializers.Serializer):
    file = serializers.FileField(help_text="The document: PDF, DOCX, Markdown, HTML or text.")


class Chunk(serializers.Serializer):
    chunk_id = serializers.IntegerField()
    document_id = serializers.IntegerField()
    title = serializers.CharField()
    page = serializers.IntegerField(allow_null=True)
    heading = serializers.CharField(allow_blank=True)
    text = serializers.CharField(allow_blank=True)
    char_start = serializers.IntegerField()
    char_end = serializers.IntegerField()
    context_before = serializers.CharField(required=False, allow_blank=True,
                                           help_text="With ?context=N: up to N characters of the document before it.")
    context_after = serializers.CharField(required=False, allow_blank=True,
                                          help_text="With ?context=N: up to N characters of the document after it.")


class ChunkBoxes(serializers.Serializer):
    chunk_id = serializers.IntegerField()
    document_id = serializers.IntegerField()
    page = serializers.IntegerField(allow_null=True, help_text="The passage's page (from 1); null when not a PDF.")
    boxes = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(min_value=0, max_value=1), min_length=4, max_length=4),
        help_text="One [x0, y0, x1, y1] per line of the passage, as fractions of the page (y grows down).")
    page_size = serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2, allow_null=True,
                                      help_text="[width, height] of the page in points; null when not a PDF.")


class SearchHit(serializers.Serializer):
    chunk_id = serializers.IntegerField()
    document_id = serializers.IntegerField()
    collection_id = serializers.IntegerField()
    title = serializers.CharField()
    version = serializers.IntegerField()
    page = serializers.IntegerField(allow_null=True)
    heading = serializers.CharField(allow_blank=True)
    score = serializers.FloatField(help_text="Fused score: compare within one answer only.")
    dense_rank = serializers.IntegerField(allow_null=True)
    lexical_rank = serializers.IntegerField(allow_null=True)
    rerank_score = serializers.FloatField(allow_null=True)
    text = serializers.CharField(allow_blank=True)
    char_start = serializers.IntegerField()
    char_end = serializers.IntegerField()


class SearchGroup(serializers.Serializer):
    document_id = serializers.IntegerField()
    collection_id = serializers.IntegerField()
    title = serializers.CharField()
    best_rank = serializers.IntegerField(help_text="1-based rank of the document's best result in `results`.")
    results = serializers.ListField(child=serializers.IntegerField(),
                                    help_text="Indexes into `results` of this document's passages, best first.")


class SearchResponse(serializers.Serializer):
    query = serializers.CharField()
    no_good_match = serializers.BooleanField(
        help_text="True when nothing matched the query well: the results are the least bad passages in scope.")
    evidence = serializers.DictField(help_text="The evidence check's numbers (dense best, lexical coverage).")
    results = SearchHit(many=True)
    groups = SearchGroup(many=True, help_text="The results grouped by document, in the order of each one's best.")


class Citation(serializers.Serializer):
    number = serializers.IntegerField(help_text="The [n] marker in the answer.")
    chunk_id = serializers.IntegerField()
    document_id = serializers.IntegerField()
    title = serializers.CharField()
    page = serializers.IntegerField(allow_null=True)
    heading = serializers.CharField(allow_blank=True)
    text = serializers.CharField(allow_blank=True)


class AnswerResponse(serializers.Serializer):
    answer = serializers.CharField(allow_blank=True)
    reasoning = serializers.CharField(allow_blank=True, allow_null=True)
    backend = serializers.CharField()
    model = serializers.CharField(help_text="The model that wrote the answer (\"extractive\" for quotes).")
    generated = serializers.BooleanField(help_text="False: extracts from the passages, not generated text.")
    finish_reason = serializers.ChoiceField(choices=["stop", "length"],
                                            help_text="\"length\": cut at the token limit (max_new_tokens).")
    truncated = serializers.BooleanField(help_text="True when the answer was cut at the token limit.")
    citation_mode = serializers.ChoiceField(choices=["marked", "context"])
    citations = Citation(many=True)
    passages = Citation(many=True)
    passages_used = serializers.IntegerField(allow_null=True)
    passages_offered = serializers.IntegerField()


class Member(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["user", "group"])
    name = serializers.CharField()
    role = serializers.ChoiceField(choices=["viewer", "editor", "owner"])
    implicit = serializers.BooleanField(help_text="True for the creator (owner by creation).")


class MemberList(serializers.Serializer):
    results = Member(many=True)


class PolicyBody(serializers.Serializer):
    policy = serializers.CharField(allow_blank=True, help_text="ABAC policy source; empty: none.")


class PolicyPut(serializers.Serializer):
    policy = serializers.CharField(allow_blank=True, help_text="ABAC policy source; empty: none.")
    confirm = serializers.BooleanField(required=False, help_text="Save even if it hides every document from you.")


class PolicyEffectRow(serializers.Serializer):
    user = serializers.CharField()
    via = serializers.CharField(help_text="owner, user, group <name> or you")
    before = serializers.IntegerField()
    after = serializers.IntegerField()


class PolicyEffectCounts(serializers.Serializer):
    before = serializers.IntegerField()
    after = serializers.IntegerField()


class PolicyEffect(serializers.Serializer):
    total = serializers.IntegerField(help_text="Live documents in the collection.")
    you = PolicyEffectCounts()
    hides_everything_from_you = serializers.BooleanField()
    people = PolicyEffectRow(many=True)
    losing = PolicyEffectRow(many=True)
    gaining = PolicyEffectRow(many=True)


class Attributes(serializers.Serializer):
    attributes = serializers.DictField(child=serializers.JSONField())


class DocumentAttributes(Attributes):
    id = serializers.IntegerField()


class UserAttributes(serializers.Serializer):
    username = serializers.CharField()
    role = serializers.CharField(required=False)
    attributes = serializers.DictField(child=serializers.JSONField())
    groups = serializers.ListField(child=serializers.CharField(), required=False)


class GroupOut(serializers.Serializer):
    name = serializers.CharField()
    members = serializers.ListField(child=serializers.CharField())


class GroupList(serializers.Serializer):
    results = GroupOut(many=True)


class GoldenQuestion(serializers.Serializer):
    id = serializers.IntegerField()
    question = serializers.CharField()
    expected_documents = serializers.ListField(child=serializers.IntegerField())
    created_at = serializers.DateTimeField()


class GoldenQuestionList(serializers.Serializer):
    results = GoldenQuestion(many=True)


class EvaluationRun(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    trigger = serializers.CharField()
    embedding_model = serializers.CharField()
    reranker = serializers.CharField(allow_null=True)
    index_version = serializers.IntegerField(allow_null=True)
    questions = serializers.IntegerField()
    ndcg10 = serializers.FloatField()
    recall10 = serializers.FloatField()
    mrr10 = serializers.FloatField()
    seconds = serializers.FloatField()
    delta_ndcg10 = serializers.FloatField(allow_null=True)
    details = serializers.JSONField()


class EvaluationRunList(serializers.Serializer):
    results = EvaluationRun(many=True)


class FusionTuning(serializers.Serializer):
    """``kb.tuning.fusion_state``: the stored choice, whether it is stale, what search uses, the latest run."""

    default = serializers.CharField(help_text="The settings' fusion, e.g. 'convex minmax w=0.5'.")
    stored = serializers.JSONField(allow_null=True, help_text="The applied choice (method, weight, norm, rrf_k, "
                                   "depth, scores, embedding_model, tuned_at; 'stale' once marked), or null.")
    stale = serializers.BooleanField(help_text="True after a full re-index or a model switch: search uses the "
                                     "default until the tuning is run and applied again.")
    stale_reason = serializers.CharField(allow_null=True, help_text="'reindex' or 'model_switch'.")
    in_use = serializers.CharField(help_text="What search and ask in this collection use now.")
    min_questions = serializers.IntegerField()
    golden_questions = serializers.IntegerField()
    tuning = serializers.JSONField(allow_null=True, help_text="The latest run: status (queued, running, done, "
                                   "failed), error, and when done result.table (setting, ndcg10, "
                                   "margin_over_default, default, chosen) with cv_tuned_ndcg10, "
                                   "cv_default_ndcg10, cv_margin.")


class TuneRequest(tuning.TuneView.Input):
    pass


class AuditEvent(serializers.Serializer):
    id = serializers.IntegerField()
    at = serializers.DateTimeField()
    actor_id = serializers.IntegerField(allow_null=True)
    actor_label = serializers.CharField(allow_blank=True)
    api_key_prefix = serializers.CharField(allow_blank=True)
    ip = serializers.CharField(allow_null=True, allow_blank=True)
    request_id = serializers.CharField(allow_blank=True)
    action = serializers.CharField()
    target_type = serializers.CharField(allow_blank=True)
    target_id = serializers.CharField(allow_blank=True)
    outcome = serializers.ChoiceField(choices=["allowed", "denied", "failed"])
    rule = serializers.CharField(allow_blank=True)
    detail = serializers.JSONField()
    prev_hash = serializers.CharField(allow_blank=True)
    hash = serializers.CharField()
    scheme = serializers.CharField(allow_blank=True)


class AuditPage(serializers.Serializer):
    results = AuditEvent(many=True)
    next = serializers.CharField(allow_null=True, help_text="The next (older) page, or null.")


class Key(serializers.Serializer):
    prefix = serializers.CharField(help_text="Public identifier of the key (not the secret).")
    name = serializers.CharField()
    user = serializers.CharField()
    state = serializers.ChoiceField(choices=["active", "expired", "revoked"])
    read_only = serializers.BooleanField()  # type: ignore[assignment]  # the field, not DRF's flag
    collections = serializers.ListField(child=serializers.IntegerField(), allow_null=True)
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class CreatedKey(Key):
    secret = serializers.CharField(help_text="The key itself: shown in this answer only.")


class KeyList(serializers.Serializer):
    results = Key(many=True)


class Turn(serializers.Serializer):
    id = serializers.IntegerField()
    question = serializers.CharField()
    standalone_question = serializers.CharField(help_text="What retrieval and the generator were given.")
    collection = serializers.IntegerField(allow_null=True)
    state = serializers.ChoiceField(choices=["answered", "streaming", "stopped", "failed"])
    created_at = serializers.DateTimeField()
    answer = serializers.JSONField(help_text="As /api/v1/ask answers (AnswerResponse); an error body if it failed.")
    withheld = serializers.IntegerField(help_text="Passages no longer readable by you: then the answer text is "
                                                  "withheld too.")


class ConversationOut(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    collection = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ConversationWithTurns(ConversationOut):
    turns = Turn(many=True)


class ConversationList(serializers.Serializer):
    results = ConversationOut(many=True)


class ConversationAnswer(AnswerResponse):
    standalone_question = serializers.CharField()
    turn = serializers.IntegerField()
    conversation = serializers.IntegerField()



# Request bodies: the views' own input serializers, under names of their own (each view calls its "Input").
class CollectionCreate(views.CollectionsView.Input):
    pass


class CollectionUpdate(views.CollectionView.Input):
    pass


class Ask(views.AskView.Input):
    pass


class Share(sharing.CollectionMembersView.Input):
    pass


class GroupCreate(sharing.GroupsView.Input):
    pass


class GroupMemberAdd(sharing.GroupMembersView.Input):
    pass


class GoldenQuestionCreate(golden.GoldenQuestionsView.Input):
    pass


class ConversationCreate(conversations.ConversationsView.Input):
    pass


class FeedbackCreate(feedback.FeedbackView.Input):
    pass


class FeedbackOut(serializers.Serializer):
    id = serializers.IntegerField()
    collection = serializers.IntegerField()
    turn = serializers.IntegerField(allow_null=True)
    rating = serializers.ChoiceField(choices=["up", "down"])
    comment = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class ConversationRename(conversations.ConversationView.Input):
    pass


class ConversationMessage(conversations.ConversationMessagesView.Input):
    pass


# --- operations --------------------------------------------------------------------------------

NO_BODY = OpenApiResponse(description="Done; no body.")
OBJECT_ID = {"collection_id": "collection", "document_id": "document", "chunk_id": "passage",
             "question_id": "golden question", "conversation_id": "conversation"}


def _ids(*names: str) -> list[OpenApiParameter]:
    return [OpenApiParameter(name, OpenApiTypes.INT, OpenApiParameter.PATH,
                             description=f"The {OBJECT_ID[name]}'s id.") for name in names]


def _op(summary: str, *, request: Any = None, responses: Any = None, parameters: Any = None,
        operation_id: str | None = None, tags: list[str] | None = None) -> Any:
    return extend_schema(summary=summary, request=request, responses=responses, parameters=parameters or [],
                         operation_id=operation_id, tags=tags)


def _describe(path: str, **operations: Any) -> type[OpenApiViewExtension]:
    """An extension that gives the view at ``path`` (dotted) these per-method schemas."""

    class Described(OpenApiViewExtension):
        target_class = path

        def view_replacement(self) -> type:
            view: type = self.target_class  # type: ignore[assignment]  # resolved from ``path`` by drf-spectacular
            return extend_schema_view(**operations)(type(view.__name__, (view,), {}))

    Described.__name__ = Described.__qualname__ = f"Describe{path.rsplit('.', 1)[-1]}"
    return Described


VIEWS = "kb.api.views"
VIEWER = "kb.api.viewer"
SHARING = "kb.api.sharing"
GOLDEN = "kb.api.golden"

EXTENSIONS = [
    _describe(f"{VIEWS}.CollectionsView",
              get=_op("Collections you can read", responses={200: CollectionList}, operation_id="collections_list",
                      tags=["collections"]),
              post=_op("Create a collection (you own it)", request=CollectionCreate,
                       responses={201: Collection}, tags=["collections"])),
    _describe(f"{VIEWS}.CollectionView",
              get=_op("One collection", responses={200: Collection}, parameters=_ids("collection_id"),
                      tags=["collections"]),
              patch=_op("Rename a collection or change its description (owner)", request=CollectionUpdate,
                        responses={200: Collection}, parameters=_ids("collection_id"), tags=["collections"]),
              delete=_op("Delete a collection and its documents (owner)", responses={204: NO_BODY},
                         parameters=_ids("collection_id"), tags=["collections"])),
    _describe(f"{VIEWS}.CollectionDocumentsView",
              get=_op("Documents of a collection", responses={200: DocumentList}, parameters=_ids("collection_id"),
                      tags=["documents"]),
              post=_op("Upload a document (editor); processing continues in the background",
                       request={"multipart/form-data": Upload},
                       responses={201: UploadedDocument, 200: UploadedDocument}, parameters=_ids("collection_id"),
                       tags=["documents"])),
    _describe(f"{VIEWS}.DocumentView",
              get=_op("One document and its processing state", responses={200: Document},
                      parameters=_ids("document_id"), tags=["documents"]),
              delete=_op("Delete a document (editor)", responses={204: NO_BODY}, parameters=_ids("document_id"),
                         tags=["documents"])),
    _describe(f"{VIEWS}.DocumentVersionRestoreView",
              post=_op("Make an earlier version's file the newest version (editor); processed like an upload",
                       request=None, responses={201: UploadedDocument, 200: UploadedDocument},
                       parameters=[*_ids("document_id"),
                                   OpenApiParameter("number", OpenApiTypes.INT, OpenApiParameter.PATH)],
                       tags=["documents"])),
    _describe(f"{VIEWS}.DocumentVersionsView",
              get=_op("A document's versions, newest first", responses={200: VersionList},
                      parameters=_ids("document_id"), tags=["documents"]),
              post=_op("Upload a new version of a document (editor)", request={"multipart/form-data": Upload},
                       responses={201: UploadedDocument, 200: UploadedDocument}, parameters=_ids("document_id"),
                       tags=["documents"])),
    _describe(f"{VIEWS}.DocumentReprocessView",
              post=_op("Process a FAILED document again (editor)", request=None, responses={202: Document},
                       parameters=_ids("document_id"), tags=["documents"])),
    _describe(f"{VIEWS}.DocumentDownloadView",
              get=_op("The document's file (searchable version, else the latest)",
                      responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
                      parameters=_ids("document_id"), tags=["documents"])),
    _describe(f"{VIEWS}.ChunkView",
              get=_op("One passage, with its place in the document", responses={200: Chunk},
                      parameters=[*_ids("chunk_id"), views.ChunkView.Input], tags=["search"])),
    _describe(f"{VIEWER}.DocumentPageView",
              get=_op("A page of a PDF document (searchable version) as PNG, for the citation viewer; "
                      "404 for a page it does not have, 415 when not a PDF",
                      responses={(200, "image/png"): OpenApiTypes.BINARY},
                      parameters=[*_ids("document_id"),
                                  OpenApiParameter("page", OpenApiTypes.INT, OpenApiParameter.PATH,
                                                   description="The page number, from 1 as in citations."),
                                  viewer.DocumentPageView.Input],
                      tags=["documents"])),
    _describe(f"{VIEWER}.ChunkBoxesView",
              get=_op("Where a passage lies on its PDF page: one rectangle per line, normalised to the page",
                      responses={200: ChunkBoxes}, parameters=_ids("chunk_id"), tags=["search"])),
    _describe(f"{VIEWS}.SearchView",
              get=_op("Hybrid search over what you may read", parameters=[views.SearchView.Input],
                      responses={200: SearchResponse}, tags=["search"])),
    _describe(f"{VIEWS}.AskView",
              post=_op("Answer a question from your documents, with citations; \"stream\": true streams "
                       "server-sent events (token, passages, done, error)",
                       request=Ask,
                       responses={(200, "application/json"): AnswerResponse,
                                  (200, "text/event-stream"): OpenApiResponse(
                                      OpenApiTypes.OBJECT, description="With \"stream\": true: server-sent events "
                                      "start, token…, citations, done (or error).")},
                       tags=["answers"])),
    _describe(f"{SHARING}.CollectionMembersView",
              get=_op("Who may do what in a collection (owner)", responses={200: MemberList},
                      parameters=_ids("collection_id"), tags=["sharing"]),
              post=_op("Share a collection with a user or a group (owner)",
                       request=Share, responses={200: MemberList},
                       parameters=_ids("collection_id"), tags=["sharing"])),
    _describe(f"{SHARING}.CollectionMemberView",
              delete=_op("Stop sharing with a user or group (owner)", responses={204: NO_BODY},
                         parameters=[*_ids("collection_id"),
                                     OpenApiParameter("kind", str, OpenApiParameter.PATH, enum=["user", "group"]),
                                     OpenApiParameter("name", str, OpenApiParameter.PATH)],
                         tags=["sharing"])),
    _describe(f"{SHARING}.CollectionPolicyView",
              get=_op("A collection's ABAC policy (owner)", responses={200: PolicyBody},
                      parameters=_ids("collection_id"), tags=["sharing"]),
              put=_op("Set a collection's ABAC policy (owner); an invalid one is a 400 with its position, one "
                      "that hides every document from you a 409 confirm_required unless confirmed",
                      request=PolicyPut, responses={200: PolicyBody}, parameters=_ids("collection_id"),
                      tags=["sharing"])),
    _describe(f"{SHARING}.CollectionPolicyPreviewView",
              post=_op("Preview a policy: who would see how many documents (owner; nothing is saved)",
                       request=PolicyBody, responses={200: PolicyEffect}, parameters=_ids("collection_id"),
                       tags=["sharing"])),
    _describe(f"{SHARING}.DocumentAttributesView",
              get=_op("A document's ABAC attributes", responses={200: DocumentAttributes},
                      parameters=_ids("document_id"), tags=["sharing"]),
              put=_op("Set a document's ABAC attributes (editor)", request=Attributes,
                      responses={200: DocumentAttributes}, parameters=_ids("document_id"), tags=["sharing"])),
    _describe(f"{SHARING}.UserAttributesView",
              get=_op("A user's role, groups and attributes (admin)", responses={200: UserAttributes},
                      parameters=[OpenApiParameter("username", str, OpenApiParameter.PATH)], tags=["admin"]),
              put=_op("Set a user's ABAC attributes (admin)", request=Attributes, responses={200: UserAttributes},
                      parameters=[OpenApiParameter("username", str, OpenApiParameter.PATH)], tags=["admin"])),
    _describe(f"{SHARING}.GroupsView",
              get=_op("Groups and their members (admin)", responses={200: GroupList}, tags=["admin"]),
              post=_op("Create a group (admin)", request=GroupCreate, responses={201: GroupOut},
                       tags=["admin"])),
    _describe(f"{SHARING}.GroupMembersView",
              post=_op("Add a member to a group (admin)", request=GroupMemberAdd,
                       responses={200: GroupOut},
                       parameters=[OpenApiParameter("name", str, OpenApiParameter.PATH)], tags=["admin"])),
    _describe(f"{SHARING}.GroupMemberView",
              delete=_op("Remove a member from a group (admin)", responses={204: NO_BODY},
                         parameters=[OpenApiParameter("name", str, OpenApiParameter.PATH),
                                     OpenApiParameter("username", str, OpenApiParameter.PATH)], tags=["admin"])),
    _describe(f"{SHARING}.GroupView",
              delete=_op("Delete a group, its memberships and its collection grants (admin; a SCIM-provisioned "
                         "group is a 409 scim_managed)", responses={204: NO_BODY},
                         parameters=[OpenApiParameter("name", str, OpenApiParameter.PATH)], tags=["admin"])),
    _describe(f"{SHARING}.PlatformPolicyView",
              get=_op("The platform-wide ABAC policy (admin)", responses={200: PolicyBody}, tags=["admin"]),
              put=_op("Set the platform-wide ABAC policy (admin); an invalid one is a 400 with its position, one "
                      "that hides every document from you a 409 confirm_required unless confirmed",
                      request=PolicyPut, responses={200: PolicyBody}, tags=["admin"])),
    _describe(f"{SHARING}.PlatformPolicyPreviewView",
              post=_op("Preview a platform policy: who would read how many documents (admin; nothing is saved)",
                       request=PolicyBody, responses={200: PolicyEffect}, tags=["admin"])),
    _describe(f"{GOLDEN}.GoldenQuestionsView",
              get=_op("A collection's golden questions", responses={200: GoldenQuestionList},
                      parameters=_ids("collection_id"), tags=["evaluation"]),
              post=_op("Add a golden question with the documents that answer it",
                       request=GoldenQuestionCreate, responses={201: GoldenQuestion},
                       parameters=_ids("collection_id"), tags=["evaluation"])),
    _describe(f"{GOLDEN}.GoldenQuestionView",
              delete=_op("Remove a golden question", responses={204: NO_BODY},
                         parameters=_ids("collection_id", "question_id"), tags=["evaluation"])),
    _describe(f"{GOLDEN}.EvaluationsView",
              get=_op("Past evaluation runs, newest first", responses={200: EvaluationRunList},
                      parameters=_ids("collection_id"), tags=["evaluation"]),
              post=_op("Run the golden set now (nDCG@10, recall@10, MRR@10)", request=None,
                       responses={201: EvaluationRun}, parameters=_ids("collection_id"), tags=["evaluation"])),
    _describe("kb.api.feedback.FeedbackView",
              post=_op("Rate an answer (thumbs up or down, optional comment); stored with its question and "
                       "passages", request=FeedbackCreate, responses={201: FeedbackOut}, tags=["answers"])),
    _describe("kb.api.feedback.FeedbackExportView",
              get=_op("The collection's answer feedback as JSON lines, in the golden-set import's shape (owners)",
                      parameters=[*_ids("collection_id"), feedback.FeedbackExportView.Input],
                      responses={(200, "application/jsonl"): OpenApiTypes.BINARY}, tags=["evaluation"])),
    _describe("kb.api.tuning.TuneView",
              get=_op("The collection's fusion choice, its staleness and the latest tuning run (owner)",
                      responses={200: FusionTuning}, parameters=_ids("collection_id"), tags=["evaluation"]),
              post=_op("Tune the fusion on the golden set (owner; runs in the background; 400 with the number "
                       "of questions needed below the minimum)", request=TuneRequest,
                       responses={202: FusionTuning}, parameters=_ids("collection_id"), tags=["evaluation"])),
    _describe("kb.api.tuning.TuneApplyView",
              post=_op("Apply the latest finished tuning run's choice (owner)", request=None,
                       responses={200: FusionTuning}, parameters=_ids("collection_id"), tags=["evaluation"])),
    _describe("kb.api.audit.AuditEventsView",
              get=_op("Audit events, newest first (admins and auditors)",
                      parameters=[audit.AuditEventsView.Input], responses={200: AuditPage},
                      tags=["audit"])),
    _describe("kb.api.conversations.ConversationsView",
              get=_op("Your conversations, most recent first", responses={200: ConversationList},
                      operation_id="conversations_list", tags=["conversations"]),
              post=_op("Start a conversation", request=ConversationCreate, responses={201: ConversationWithTurns},
                       tags=["conversations"])),
    _describe("kb.api.conversations.ConversationView",
              get=_op("A conversation with its turns", responses={200: ConversationWithTurns},
                      parameters=_ids("conversation_id"), tags=["conversations"]),
              patch=_op("Rename a conversation", request=ConversationRename, responses={200: ConversationOut},
                        parameters=_ids("conversation_id"), tags=["conversations"]),
              delete=_op("Delete a conversation", responses={204: NO_BODY}, parameters=_ids("conversation_id"),
                         tags=["conversations"])),
    _describe("kb.api.conversations.ConversationMessagesView",
              post=_op("Ask in a conversation: a follow-up is understood through the earlier questions",
                       request=ConversationMessage,
                       responses={(200, "application/json"): ConversationAnswer,
                                  (200, "text/event-stream"): OpenApiResponse(
                                      OpenApiTypes.OBJECT, description="With \"stream\": true: the events of "
                                      "/api/v1/ask; start carries standalone_question.")},
                       parameters=_ids("conversation_id"), tags=["conversations"])),
    _describe("kb.api.keys.KeysView",
              get=_op("Your API keys (?all=1: everyone's, for admins)", responses={200: KeyList},
                      parameters=[OpenApiParameter("all", bool, description="Every user's keys (admins).")],
                      tags=["keys"]),
              post=_op("Create an API key; its secret is in this answer only", request=keys.KeyInput,
                       responses={201: CreatedKey}, tags=["keys"])),
    _describe("kb.api.keys.KeyView",
              delete=_op("Revoke a key (its owner or an admin)", responses={204: NO_BODY},
                         parameters=[OpenApiParameter("prefix", str, OpenApiParameter.PATH)], tags=["keys"])),
]


# --- authentication ----------------------------------------------------------------------------


def _bearer_scheme(target: str, name: str, description: str, bearer_format: str = "") -> type:
    """The OpenAPI security scheme of one of Cairn's bearer authenticators."""
    definition = {"type": "http", "scheme": "bearer", "description": description}
    if bearer_format:
        definition["bearerFormat"] = bearer_format

    class Scheme(OpenApiAuthenticationExtension):
        target_class = target

        def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
            return dict(definition)

    Scheme.name = name
    Scheme.__name__ = Scheme.__qualname__ = f"{name}Scheme"
    return Scheme


AUTHENTICATION = [
    _bearer_scheme("access.authentication.ApiKeyAuthentication", "apiKey",
                   "A Cairn API key: Authorization: Bearer cairn_…", "cairn_… API key"),
    _bearer_scheme("access.authentication.IdpTokenAuthentication", "idpToken",
                   "An access token from the configured identity provider (CAIRN_OIDC_ISSUER).", "JWT"),
    _bearer_scheme("access.authentication.PersonalModeAuthentication", "personal",
                   "Personal mode on this computer: requests from loopback are its owner's "
                   "(any bearer value, as chat clients always send one)."),
]


# --- what the schema covers ----------------------------------------------------------------------


def api_v1_only(endpoints: list[tuple[str, str, str, Any]]) -> list[tuple[str, str, str, Any]]:
    """Preprocessing hook: ``/api/v1/`` only; ``/v1/`` is OpenAI's API, described by OpenAI (docs/openai-compatible.md)."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/v1/")]


# --- the error shape everywhere ------------------------------------------------------------------


def errors_everywhere(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Postprocessing hook: every operation answers ``Error`` for any status it does not list."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message", "details"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}, "details": {}}}},
    })
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                operation.setdefault("responses", {}).setdefault("default", {
                    "description": "An error: 400 invalid input, 401 not signed in, 403 not allowed, 404 not "
                                   "found or not yours to see, 413 too large, 415 unsupported type, 429 too "
                                   "many requests, 503/507 the service cannot serve it now (see Retry-After).",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                })
    return result
