"""Server-rendered pages; they read through the same selectors as the API.

The pages call the REST API from the browser (``static/cairn.js``), so each
page makes sure the CSRF cookie is set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from access.models import AnyUser
from access.services import access_denied_record, actor_from_request, signed_in_user
from kb import attribute_forms, selectors
from kb.models import Chunk, Document

CHUNKS_PER_PAGE = 50
T = TypeVar("T")


def readable_or_404(request: HttpRequest, kind: str, pk: int, get: Callable[[AnyUser, object], T]) -> T:
    """The object if the user may read it; else the 404 page, and the denial in the audit log."""
    try:
        return get(request.user, pk)
    except selectors.NotFound:
        access_denied_record(actor=actor_from_request(request), target_type=kind, target_id=pk,
                             rule="not readable by this user (or does not exist)")
        raise Http404(f"No such {kind}") from None


@login_required
@ensure_csrf_cookie
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "kb/home.html", {"collections": selectors.readable_collections(request.user)})


@login_required
@ensure_csrf_cookie
def collection_page(request: HttpRequest, collection_id: int) -> HttpResponse:
    collection = readable_or_404(request, "collection", collection_id, selectors.collection_get)
    documents = selectors.readable_documents(request.user, collection=collection)
    role = selectors.collection_role(request.user, collection)
    sharing = None
    if role == selectors.Role.OWNER:  # only owners see who has access and the policy
        from access.models import Policy
        from access.selectors import policy_source

        sharing = {"members": selectors.collection_members(collection),
                   "policy": policy_source(Policy.collection_scope(collection.pk))}
    from kb.policy_preview import hidden_from

    hidden = hidden_from(signed_in_user(request), collection)
    return render(request, "kb/collection.html", {
        "collection": collection, "documents": documents, "role": role, "sharing": sharing,
        "hidden_by_policy": hidden, "document_total": len(documents) + hidden,
    })


@login_required
@ensure_csrf_cookie
def document_page(request: HttpRequest, document_id: int) -> HttpResponse:
    try:
        document = selectors.document_get(request.user, document_id)
    except selectors.NotFound:
        # An editor still manages a document a policy hides from them (labelling it is how it becomes
        # readable): they get its status and attributes, never its content.
        try:
            document = selectors.document_get_managed(request.user, document_id)
        except selectors.NotFound:
            document = readable_or_404(request, "document", document_id, selectors.document_get)
        return render(request, "kb/document.html", document_context(request, document, hidden=True))
    return render(request, "kb/document.html", document_context(request, document))


def document_context(request: HttpRequest, document: Document, *, hidden: bool = False) -> dict[str, Any]:
    """What the document page shows of a document the user may read (``selectors.document_get``).

    ``hidden``: one a policy hides from this editor (``selectors.document_get_managed``): no passages
    and no versions, only its status and attributes.
    """
    # document_get is the permission check: the chunks below belong to the
    # current (searchable) version of a document this user may read.
    version = document.current_version
    chunks = (version.chunks.restrict(request.user).order_by("ordinal")
              if version is not None and not hidden else None)
    # A deep link to a passage (?chunk=<id>, from a citation) opens the page of the list that holds it.
    target = _target_chunk(chunks, request.GET.get("chunk"))
    asked_page = request.GET.get("page") or (target[1] // CHUNKS_PER_PAGE + 1 if target else None)
    page = Paginator(chunks, CHUNKS_PER_PAGE).get_page(asked_page) if chunks is not None else None
    latest = document.latest_version
    job = getattr(latest, "job", None) if latest is not None else None
    role = selectors.collection_role(request.user, document.collection)
    versions = (document.versions.restrict(request.user).select_related("job", "created_by")
                .order_by("-number")[:50]) if not hidden else []
    return {
        "hidden_by_policy": hidden,
        "document": document, "version": version, "latest": latest, "job": job, "chunks": page,
        "target_chunk": target[0] if target else None, "versions": versions,
        "can_edit": role in (selectors.Role.EDITOR, selectors.Role.OWNER),
        "attribute_rows": attribute_forms.rows_from_attributes(document.attributes),
        "attribute_types": attribute_forms.TYPES,
    }


def _target_chunk(chunks: QuerySet[Chunk] | None, chunk_id: str | None) -> tuple[int, int] | None:
    """``(id, ordinal)`` of the asked-for passage if it is one of ``chunks``."""
    if chunks is None or not chunk_id or not chunk_id.isdigit() or len(chunk_id) > 18:
        return None
    ordinal = chunks.filter(pk=int(chunk_id)).values_list("ordinal", flat=True).first()
    return (int(chunk_id), ordinal) if ordinal is not None else None
