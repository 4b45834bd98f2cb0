"""``/api/schema/`` and ``/api/docs/``, with drf-spectacular imported on their first request.

drf-spectacular's views pull in its generator, its plumbing and this API's
descriptions (``kb.api.schema``): ~0.5 s on a 2.5 GHz core, paid by every
``manage.py`` command (their system checks load the URLconf) and every web
process at start-up, while the schema is asked for rarely.  The
descriptions are registered by the schema's preprocessing hook
(``kb.api.schema.api_v1_only`` in ``SPECTACULAR_SETTINGS``), which runs
before any view is described, however the schema is generated (these views,
``manage.py spectacular``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt


@functools.cache
def _schema() -> Callable[..., HttpResponseBase]:
    from drf_spectacular.views import SpectacularAPIView

    return SpectacularAPIView.as_view()


@functools.cache
def _docs() -> Callable[..., HttpResponseBase]:
    from drf_spectacular.views import SpectacularSwaggerSplitView

    return SpectacularSwaggerSplitView.as_view(url_name="api-schema")


@csrf_exempt  # as DRF's views are; both answer GET only
def schema_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
    """The OpenAPI schema of ``/api/v1/`` (drf-spectacular's ``SpectacularAPIView``)."""
    return _schema()(request, *args, **kwargs)


@csrf_exempt
def docs_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
    """Swagger UI for that schema, from bundled files (``SpectacularSwaggerSplitView``)."""
    return _docs()(request, *args, **kwargs)
