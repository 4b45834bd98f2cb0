from django.urls import path

from kb import access_pages, audit_pages, golden_pages, key_pages, views

urlpatterns = [
    path("", views.home, name="home"),
    path("collections/<int:collection_id>/", views.collection_page, name="collection"),
    path("collections/<int:collection_id>/evaluation/", golden_pages.collection_evaluation,
         name="collection-evaluation"),
    path("documents/<int:document_id>/", views.document_page, name="document"),
    path("documents/<int:document_id>/attributes/", access_pages.document_attributes_page,
         name="document-attributes"),
    path("settings/keys/", key_pages.keys_page, name="keys"),
    path("settings/access/", access_pages.access_admin, name="access-admin"),
    path("settings/access/users/<str:username>/", access_pages.user_attributes_page, name="access-user"),
    path("audit/", audit_pages.audit_list, name="audit"),
    path("audit/<int:event_id>/", audit_pages.audit_event, name="audit-event"),
    path("audit/export.<str:fmt>", audit_pages.audit_export, name="audit-export"),
]
