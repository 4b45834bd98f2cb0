"""The SCIM 2.0 endpoints at ``/scim/v2/`` (RFC 7644), for an identity provider's provisioning client.

Authenticated by ``Authorization: Bearer <CAIRN_SCIM_TOKEN>`` — a token the
administrator generates and gives the IdP; without it set, SCIM is off and
every request is refused.  Answers are ``application/scim+json``; every
error uses SCIM's error schema (``status``, ``scimType``, ``detail``).
Supported: Users and Groups (create, read, replace, PATCH, delete), filters
(any RFC 7644 filter; ``userName``/``externalId``/``displayName``/``id eq``
run as an index lookup), index pagination, ``attributes`` and
``excludedAttributes``.  Not supported (and so announced in
``ServiceProviderConfig``): bulk, sorting, ETags, password changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from pydantic import ValidationError
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    ETag,
    Filter,
    InvalidFilterException,
    InvalidSyntaxException,
    ListResponse,
    Meta,
    NotFoundException,
    NotImplementedException,
    Patch,
    PatchOp,
    PayloadTooLargeException,
    ResourceType,
    Schema,
    SCIMException,
    ScimFilter,
    SearchRequest,
    ServiceProviderConfig,
    Sort,
    TooManyException,
    UnauthorizedException,
)
from scim2_models import (
    Error as ScimError,
)

from access import scim
from access.models import AuditEvent
from access.services import Actor, audit_record

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/scim+json"
MAX_PAYLOAD = 1024 * 1024
MAX_PAGE = 200
# A filter no index answers is evaluated row by row; past this many rows it is refused (use an "eq" filter).
MAX_SCAN = 20_000


def _base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/scim/v2").rstrip("/")


def _answer(payload: dict[str, Any], status: int = 200, location: str | None = None) -> HttpResponse:
    response = HttpResponse(json.dumps(payload), status=status, content_type=CONTENT_TYPE)
    if location:
        response["Location"] = location
    return response


def _error(error: SCIMException) -> HttpResponse:
    body = error.to_error().model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    response = _answer(body, status=error.status)
    if error.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="scim"'
    return response


def _actor(request: HttpRequest) -> Actor:
    return Actor(user=None, api_key_prefix="scim", ip=getattr(request, "client_ip", None) or request.META.get(
        "REMOTE_ADDR"), request_id=getattr(request, "request_id", ""))


def _authenticate(request: HttpRequest) -> None:
    token = settings.CAIRN_SCIM_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, presented = header.partition(" ")
    ok = bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
        hashlib.sha256(presented.strip().encode()).digest(), hashlib.sha256(str(token).encode()).digest())
    if ok:
        return
    audit_record(actor=_actor(request), action="scim.auth", target_type="scim", target_id=request.path[:200],
                 outcome=AuditEvent.Outcome.DENIED,
                 rule="SCIM is off (CAIRN_SCIM_TOKEN unset)" if not token else "missing or wrong SCIM token")
    raise UnauthorizedException(detail="A valid SCIM bearer token is required." if token
                                else "SCIM provisioning is not enabled on this server (CAIRN_SCIM_TOKEN).")


def _body(request: HttpRequest) -> Any:
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit() or int(declared) > MAX_PAYLOAD:
        raise PayloadTooLargeException(detail=f"A SCIM request body is at most {MAX_PAYLOAD} bytes.")
    raw = request.read(MAX_PAYLOAD + 1)
    if len(raw) > MAX_PAYLOAD:
        raise PayloadTooLargeException(detail=f"A SCIM request body is at most {MAX_PAYLOAD} bytes.")
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise InvalidSyntaxException(detail="The request body is not JSON.") from None
    if not isinstance(body, dict):
        raise InvalidSyntaxException(detail="The request body must be a JSON object.")
    return body


def _validated(model: Any, body: Any, context: Context) -> Any:
    try:
        return model.model_validate(body, scim_ctx=context)
    except SCIMException:
        raise
    except ValidationError as error:
        problems = error.errors()
        where = ".".join(str(part) for part in problems[0]["loc"]) if problems else ""
        message = problems[0]["msg"] if problems else "invalid"
        raise InvalidSyntaxException(detail=f"{where}: {message}"[:300]) from None


def _search(request: HttpRequest, query: Any = None) -> SearchRequest:
    query = request.GET if query is None else query
    params: dict[str, Any] = {}
    for name in ("filter", "startIndex", "count"):
        if name in query:
            params[name] = query[name]
    for name in ("attributes", "excludedAttributes"):
        if query.get(name):
            params[name] = [item.strip() for item in query[name].split(",") if item.strip()]
    for name in ("startIndex", "count"):
        if name in params:
            value = str(params[name]).strip()
            if not value.lstrip("-").isdigit() or len(value) > 9:
                raise InvalidSyntaxException(detail=f"{name} must be an integer.")
            params[name] = int(value)
    if "filter" in params:
        if len(params["filter"]) > 2000:
            raise InvalidFilterException(detail="A filter is at most 2000 characters.")
        try:
            ScimFilter(params["filter"])
        except SCIMException as error:
            raise InvalidFilterException(detail=error.detail if hasattr(error, "detail") else str(error)) from None
        except (ValueError, TypeError) as error:
            raise InvalidFilterException(detail=str(error)[:300]) from None
    params["startIndex"] = max(1, params.get("startIndex", 1))
    params["count"] = min(MAX_PAGE, max(0, params.get("count", MAX_PAGE)))
    return _validated(SearchRequest, params, Context.SEARCH_REQUEST)


def _search_posted(request: HttpRequest) -> SearchRequest:
    """A ``POST …/.search`` body (RFC 7644 §3.4.3): the same parameters as a query string."""
    body = _body(request)
    params = {name: body[name] for name in ("filter", "startIndex", "count", "attributes", "excludedAttributes")
              if body.get(name) is not None}
    for name in ("attributes", "excludedAttributes"):
        if name in params and not (isinstance(params[name], list) and all(isinstance(i, str) for i in params[name])):
            raise InvalidSyntaxException(detail=f"{name} must be a list of attribute names.")
    query = {name: (",".join(value) if isinstance(value, list) else str(value)) for name, value in params.items()}
    return _search(request, query)


def _list(request: HttpRequest, model: Any, rows: Any, to_resource: Callable[[Any], Any],
          filtered: Callable[[Any], Any], search: SearchRequest | None = None) -> HttpResponse:
    search = search or _search(request)
    text = str(search.filter) if search.filter else ""
    exact = scim.indexed_equality(text) if text else None
    start, count = search.start_index or 1, search.count if search.count is not None else MAX_PAGE
    if not text or exact is not None:
        matched = filtered(exact)
        total = matched.count()
        page = [to_resource(row) for row in matched[start - 1:start - 1 + count]] if count else []
    else:
        try:
            expression = ScimFilter[model](text)
        except SCIMException:
            raise
        except (ValueError, TypeError) as error:
            raise InvalidFilterException(detail=str(error)[:300]) from None
        if rows.count() > MAX_SCAN:
            raise TooManyException(detail=f"This filter would read more than {MAX_SCAN} rows; filter with "
                                          "userName, externalId or displayName eq \"…\".")
        hits = [resource for resource in map(to_resource, scim.iterate(rows)) if expression.match(resource)]
        total, page = len(hits), hits[start - 1:start - 1 + count]
    listing = ListResponse[model](total_results=total, start_index=start, items_per_page=len(page),
                                  resources=page)
    return _answer(listing.model_dump(scim_ctx=Context.SEARCH_RESPONSE, response_parameters=search))


def _one(request: HttpRequest, resource: Any, status: int = 200) -> HttpResponse:
    search = _search(request) if request.method == "GET" else None
    context = Context.RESOURCE_CREATION_RESPONSE if status == 201 else Context.RESOURCE_QUERY_RESPONSE
    body = resource.model_dump(scim_ctx=context, response_parameters=search)
    location = resource.meta.location if resource.meta else None
    return _answer(body, status=status, location=location if status == 201 else None)


def _endpoint(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Authentication, SCIM errors for everything that goes wrong, and no CSRF (a bearer-token API)."""

    @csrf_exempt
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            _authenticate(request)
            return view(request, *args, **kwargs)
        except SCIMException as error:
            return _error(error)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


def _method_not_allowed(request: HttpRequest, allowed: str) -> HttpResponse:
    response = _answer(ScimError(status=405, detail=f"{request.method} is not allowed here; use {allowed}.")
                       .model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE), status=405)
    response["Allow"] = allowed
    return response


# --- discovery ---------------------------------------------------------------------------------


def service_provider_config(base_url: str) -> ServiceProviderConfig:
    return ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_PAGE),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=False),
        authentication_schemes=[AuthenticationScheme(
            type=AuthenticationScheme.Type.oauthbearertoken, name="Bearer token",
            description="The SCIM token the Cairn administrator set (CAIRN_SCIM_TOKEN).", primary=True)],
        meta=Meta(resource_type="ServiceProviderConfig", location=f"{base_url}/ServiceProviderConfig"),
    )


@_endpoint
def config_view(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed(request, "GET")
    config = service_provider_config(_base_url(request))
    return _answer(config.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))


def _with_meta(item: Any, resource_type: str, location: str) -> Any:
    item.meta = {"resourceType": resource_type, "location": location}
    return item


@_endpoint
def schemas_view(request: HttpRequest, schema_id: str | None = None) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed(request, "GET")
    base = _base_url(request)
    published = [_with_meta(schema, "Schema", f"{base}/Schemas/{schema.id}") for schema in scim.schemas()]
    if schema_id is not None:
        for schema in published:
            if schema.id == schema_id:
                return _answer(schema.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))
        raise NotFoundException(detail=f"No schema {schema_id[:100]!r}.")
    if request.GET.get("filter"):
        raise InvalidFilterException(detail="/Schemas takes no filter.")
    listing = ListResponse[Schema](total_results=len(published), start_index=1, items_per_page=len(published),
                                   resources=published)
    return _answer(listing.model_dump(scim_ctx=Context.SEARCH_RESPONSE))


@_endpoint
def resource_types_view(request: HttpRequest, type_id: str | None = None) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed(request, "GET")
    base = _base_url(request)
    published = [_with_meta(item, "ResourceType", f"{base}/ResourceTypes/{item.id}") for item in scim.resource_types()]
    if type_id is not None:
        for item in published:
            if item.id == type_id:
                return _answer(item.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))
        raise NotFoundException(detail=f"No resource type {type_id[:100]!r}.")
    if request.GET.get("filter"):
        raise InvalidFilterException(detail="/ResourceTypes takes no filter.")
    listing = ListResponse[ResourceType](total_results=len(published), start_index=1,
                                         items_per_page=len(published), resources=published)
    return _answer(listing.model_dump(scim_ctx=Context.SEARCH_RESPONSE))


# --- Users and Groups --------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """What the endpoints of one resource type call (``access.scim``): Users and Groups share the rest."""

    model: Any
    rows: Callable[[], Any]
    filtered: Callable[[Any], Any]
    get: Callable[[str], Any]
    resource: Callable[[Any, str], Any]
    save: Callable[[Actor, Any, Any], Any]     # (actor, resource, existing row or None) → the row
    delete: Callable[[Actor, Any], None]


USERS = Kind(scim.ScimUser, scim.users, scim.users_filtered, scim.user_get, scim.user_resource,
             lambda actor, resource, row: scim.user_save(actor=actor, resource=resource, user=row),
             lambda actor, row: scim.user_delete(actor=actor, user=row))
GROUPS = Kind(scim.ScimGroup, scim.groups, scim.groups_filtered, scim.group_get, scim.group_resource,
              lambda actor, resource, row: scim.group_save(actor=actor, resource=resource, group=row),
              lambda actor, row: scim.group_delete(actor=actor, group=row))


def _listing(request: HttpRequest, kind: Kind, search: SearchRequest | None = None) -> HttpResponse:
    base = _base_url(request)
    return _list(request, kind.model, kind.rows(), lambda row: kind.resource(row, base), kind.filtered, search)


def _resources(request: HttpRequest, kind: Kind) -> HttpResponse:
    """``/Users``, ``/Groups``: GET lists (filter, pages), POST creates."""
    if request.method == "GET":
        return _listing(request, kind)
    if request.method == "POST":
        resource = _validated(kind.model, _body(request), Context.RESOURCE_CREATION_REQUEST)
        row = kind.save(_actor(request), resource, None)
        return _one(request, kind.resource(row, _base_url(request)), status=201)
    return _method_not_allowed(request, "GET, POST")


def _resource(request: HttpRequest, kind: Kind, resource_id: str) -> HttpResponse:
    """``/Users/<id>``, ``/Groups/<id>``: GET, PUT (replace), PATCH, DELETE."""
    base = _base_url(request)
    row = kind.get(resource_id)
    if request.method == "GET":
        return _one(request, kind.resource(row, base))
    if request.method == "PUT":
        resource = _validated(kind.model, _body(request), Context.RESOURCE_REPLACEMENT_REQUEST)
        resource.replace(kind.resource(row, base))
        row = kind.save(_actor(request), resource, row)
        return _one(request, kind.resource(row, base))
    if request.method == "PATCH":
        patch = _validated(PatchOp[kind.model], _body(request),  # type: ignore[name-defined]
                           Context.RESOURCE_PATCH_REQUEST)
        resource = kind.resource(row, base)
        if patch.patch(resource):
            row = kind.save(_actor(request), resource, row)
        return _one(request, kind.resource(row, base))
    if request.method == "DELETE":
        kind.delete(_actor(request), row)
        return HttpResponse(status=204)
    return _method_not_allowed(request, "GET, PUT, PATCH, DELETE")


def _posted_search(request: HttpRequest, kind: Kind) -> HttpResponse:
    """``/Users/.search``, ``/Groups/.search``: a search request in the body (RFC 7644 §3.4.3)."""
    if request.method != "POST":
        return _method_not_allowed(request, "POST")
    return _listing(request, kind, _search_posted(request))


@_endpoint
def users_view(request: HttpRequest) -> HttpResponse:
    return _resources(request, USERS)


@_endpoint
def user_view(request: HttpRequest, resource_id: str) -> HttpResponse:
    return _resource(request, USERS, resource_id)


@_endpoint
def groups_view(request: HttpRequest) -> HttpResponse:
    return _resources(request, GROUPS)


@_endpoint
def group_view(request: HttpRequest, resource_id: str) -> HttpResponse:
    return _resource(request, GROUPS, resource_id)


@_endpoint
def users_search_view(request: HttpRequest) -> HttpResponse:
    return _posted_search(request, USERS)


@_endpoint
def groups_search_view(request: HttpRequest) -> HttpResponse:
    return _posted_search(request, GROUPS)


@_endpoint
def root_search_view(request: HttpRequest) -> HttpResponse:
    raise NotImplementedException(detail="Search one resource type at a time: POST /Users/.search or /Groups/.search.")


@_endpoint
def unknown_view(request: HttpRequest, rest: str) -> HttpResponse:
    raise NotFoundException(detail=f"No SCIM endpoint /{rest[:100]}.")
