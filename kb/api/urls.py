from django.urls import path

from kb.api import audit, views

urlpatterns = [
    path("health", views.HealthView.as_view()),
    path("collections", views.CollectionsView.as_view()),
    path("collections/<str:collection_id>", views.CollectionView.as_view()),
    path("collections/<str:collection_id>/documents", views.CollectionDocumentsView.as_view()),
    path("documents/<str:document_id>", views.DocumentView.as_view()),
    path("documents/<str:document_id>/versions", views.DocumentVersionsView.as_view()),
    path("documents/<str:document_id>/reprocess", views.DocumentReprocessView.as_view()),
    path("documents/<str:document_id>/download", views.DocumentDownloadView.as_view()),
    path("chunks/<str:chunk_id>", views.ChunkView.as_view()),
    path("search", views.SearchView.as_view()),
    path("ask", views.AskView.as_view()),
    path("audit", audit.AuditEventsView.as_view()),
]
