"""``/scim/v2/`` (see ``access.scim_views``)."""

from django.urls import path, re_path

from access import scim_views

urlpatterns = [
    path("ServiceProviderConfig", scim_views.config_view, name="scim_config"),
    path("Schemas", scim_views.schemas_view, name="scim_schemas"),
    path("Schemas/<str:schema_id>", scim_views.schemas_view, name="scim_schema"),
    path("ResourceTypes", scim_views.resource_types_view, name="scim_resource_types"),
    path("ResourceTypes/<str:type_id>", scim_views.resource_types_view, name="scim_resource_type"),
    path(".search", scim_views.root_search_view, name="scim_search"),
    path("Users", scim_views.users_view, name="scim_users"),
    path("Users/.search", scim_views.users_search_view, name="scim_users_search"),
    path("Users/<str:resource_id>", scim_views.user_view, name="scim_user"),
    path("Groups", scim_views.groups_view, name="scim_groups"),
    path("Groups/.search", scim_views.groups_search_view, name="scim_groups_search"),
    path("Groups/<str:resource_id>", scim_views.group_view, name="scim_group"),
    re_path(r"^(?P<rest>.*)$", scim_views.unknown_view, name="scim_unknown"),
]
