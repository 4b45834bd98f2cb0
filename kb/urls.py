from django.urls import path

from kb import views

urlpatterns = [
    path("", views.home, name="home"),
    path("collections/<int:collection_id>/", views.collection_page, name="collection"),
    path("documents/<int:document_id>/", views.document_page, name="document"),
]
