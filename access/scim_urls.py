"""``/scim/v2/`` (see ``access.scim_views``).

The views are imported on the first SCIM request, not with the URLconf:
``scim2_models`` builds its pydantic models at import (~1 s on a 2.5 GHz
core), and every ``manage.py`` command loads the URLconf for its system
checks, every web process at start-up — most of them never serve SCIM.
"""

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt


def _view(name: str) -> Callable[..., HttpResponse]:
    """``access.scim_views.<name>``, imported when it is first called."""

    @csrf_exempt  # as every SCIM view (a bearer-token API): the middleware reads it before the call
    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        from access import scim_views

        target: Callable[..., HttpResponse] = getattr(scim_views, name)
        return target(request, *args, **kwargs)

    view.__name__ = view.__qualname__ = name
    return view


urlpatterns = [
    path("ServiceProviderConfig", _view("config_view"), name="scim_config"),
    path("Schemas", _view("schemas_view"), name="scim_schemas"),
    path("Schemas/<str:schema_id>", _view("schemas_view"), name="scim_schema"),
    path("ResourceTypes", _view("resource_types_view"), name="scim_resource_types"),
    path("ResourceTypes/<str:type_id>", _view("resource_types_view"), name="scim_resource_type"),
    path(".search", _view("root_search_view"), name="scim_search"),
    path("Users", _view("users_view"), name="scim_users"),
    path("Users/.search", _view("users_search_view"), name="scim_users_search"),
    path("Users/<str:resource_id>", _view("user_view"), name="scim_user"),
    path("Groups", _view("groups_view"), name="scim_groups"),
    path("Groups/.search", _view("groups_search_view"), name="scim_groups_search"),
    path("Groups/<str:resource_id>", _view("group_view"), name="scim_group"),
    re_path(r"^(?P<rest>.*)$", _view("unknown_view"), name="scim_unknown"),
]
