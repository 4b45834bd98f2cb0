from django.conf import settings
from django.urls import URLPattern, URLResolver, include, path
from django.views.i18n import JavaScriptCatalog, set_language

from kb.api import errors
from kb.api.health import healthz_view, readyz_view
from kb.api.lazy_schema import docs_view, schema_view
from kb.api.metrics import metrics_view
from kb.api.urls import openai_urlpatterns

urlpatterns: list[URLPattern | URLResolver] = [
    # The UI's language: POST from the switcher in the page header (stores the choice in a cookie), and the
    # JavaScript catalogue of the active language (a same-origin script, so the CSP's script-src 'self' holds).
    path("i18n/setlang/", set_language, name="set_language"),
    path("jsi18n/", JavaScriptCatalog.as_view(domain="djangojs"), name="javascript-catalog"),
    path("api/v1/", include("kb.api.urls")),
    # The OpenAPI schema and Swagger UI (bundled files, its start-up script served as a file too: no inline
    # script, no CDN), imported on first use (kb.api.schema); the API's own descriptions are registered by
    # the schema's preprocessing hook (SPECTACULAR_SETTINGS), before any view is described.
    path("api/schema/", schema_view, name="api-schema"),
    path("api/docs/", docs_view, name="api-docs"),
    path("v1/", include(openai_urlpatterns)),
    path("metrics", metrics_view, name="metrics"),
    path("scim/v2/", include("access.scim_urls")),
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
