from django.contrib import admin
from django.urls import include, path

from kb.api import errors
from kb.api.metrics import metrics_view

urlpatterns = [
    path("api/v1/", include("kb.api.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("", include("access.urls")),
    path("", include("kb.urls")),
]

handler400 = errors.handler400
handler403 = errors.handler403
handler404 = errors.handler404
handler500 = errors.handler500
