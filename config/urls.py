from django.conf import settings
from django.urls import URLPattern, URLResolver, include, path

from kb.api import errors
from kb.api.health import healthz_view, readyz_view
from kb.api.metrics import metrics_view

urlpatterns: list[URLPattern | URLResolver] = [
    path("api/v1/", include("kb.api.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("healthz", healthz_view, name="healthz"),
    path("readyz", readyz_view, name="readyz"),
    path("", include("access.urls")),
    path("", include("kb.urls")),
]
if settings.CAIRN_DJANGO_ADMIN:  # off by default; audited when on (access/admin.py)
    from access.admin import site

    urlpatterns.insert(0, path("admin/", site.urls))

handler400 = errors.handler400
handler403 = errors.handler403
handler404 = errors.handler404
handler500 = errors.handler500
