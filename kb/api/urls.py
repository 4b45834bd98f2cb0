from django.urls import path

from kb.api import (
    audit,
    conversations,
    feedback,
    golden,
    keys,
    openai,
    sharing,
    tuning,
    viewer,
    views,
)
from kb.api.health import healthz_view

urlpatterns = [
    path("health", healthz_view),  # the old name of /healthz
    path("collections", views.CollectionsView.as_view()),
    path("collections/<str:collection_id>", views.CollectionView.as_view()),
    path("collections/<str:collection_id>/documents", views.CollectionDocumentsView.as_view()),
    path("collections/<str:collection_id>/members", sharing.CollectionMembersView.as_view()),
    path("collections/<str:collection_id>/members/<str:kind>/<str:name>", sharing.CollectionMemberView.as_view()),
    path("collections/<str:collection_id>/policy", sharing.CollectionPolicyView.as_view()),
    path("collections/<str:collection_id>/policy/preview", sharing.CollectionPolicyPreviewView.as_view()),
    path("collections/<str:collection_id>/golden", golden.GoldenQuestionsView.as_view()),
    path("collections/<str:collection_id>/golden/<str:question_id>", golden.GoldenQuestionView.as_view()),
    path("collections/<str:collection_id>/evaluations", golden.EvaluationsView.as_view()),
    path("collections/<str:collection_id>/feedback/export", feedback.FeedbackExportView.as_view()),
    path("collections/<str:collection_id>/tune", tuning.TuneView.as_view()),
    path("collections/<str:collection_id>/tune/apply", tuning.TuneApplyView.as_view()),
    path("documents/<str:document_id>/attributes", sharing.DocumentAttributesView.as_view()),
    path("admin/users/<str:username>", sharing.UserAttributesView.as_view()),
    path("admin/groups", sharing.GroupsView.as_view()),
    path("admin/groups/<str:name>", sharing.GroupView.as_view()),
    path("admin/groups/<str:name>/members", sharing.GroupMembersView.as_view()),
    path("admin/groups/<str:name>/members/<str:username>", sharing.GroupMemberView.as_view()),
    path("admin/policy", sharing.PlatformPolicyView.as_view()),
    path("admin/policy/preview", sharing.PlatformPolicyPreviewView.as_view()),
    path("documents/<str:document_id>", views.DocumentView.as_view()),
    path("documents/<str:document_id>/versions", views.DocumentVersionsView.as_view()),
    path("documents/<str:document_id>/versions/<str:number>/restore", views.DocumentVersionRestoreView.as_view()),
    path("documents/<str:document_id>/reprocess", views.DocumentReprocessView.as_view()),
    path("documents/<str:document_id>/download", views.DocumentDownloadView.as_view()),
    path("documents/<str:document_id>/pages/<str:page>.png", viewer.DocumentPageView.as_view()),
    path("chunks/<str:chunk_id>", views.ChunkView.as_view()),
    path("chunks/<str:chunk_id>/boxes", viewer.ChunkBoxesView.as_view()),
    path("search", views.SearchView.as_view()),
    path("ask", views.AskView.as_view()),
    path("feedback", feedback.FeedbackView.as_view()),
    path("audit", audit.AuditEventsView.as_view()),
    path("conversations", conversations.ConversationsView.as_view()),
    path("conversations/<str:conversation_id>", conversations.ConversationView.as_view()),
    path("conversations/<str:conversation_id>/messages", conversations.ConversationMessagesView.as_view()),
    path("keys", keys.KeysView.as_view()),
    path("keys/<str:prefix>", keys.KeyView.as_view()),
]

# Mounted at /v1/ (config/urls.py): the OpenAI-compatible endpoint chat clients expect.
openai_urlpatterns = [
    path("models", openai.ModelsView.as_view()),
    path("models/<str:model>", openai.ModelView.as_view()),
    path("chat/completions", openai.ChatCompletionsView.as_view()),
]
