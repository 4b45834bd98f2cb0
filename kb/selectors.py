"""Reads of the knowledge base — every one scoped to what the user may read.

``read_scope`` is the single read decision (``readable_documents`` is its
queryset): RBAC (the collection is owned by the user or granted to the user
or one of their groups — ``readable_collections``) AND every applicable ABAC
policy (the collection's and the platform's, compiled to a ``Q`` over
``Document.attributes``).  Every path that returns documents, chunks or
answers starts from it: lists, ``document_get`` (which also checks the
policies' Python predicates), ``searchable_ranges`` → the chunk-id mask both
retrieval legs search inside, ``chunk_get``.  The decision is made on
every request, so revocation applies to the next one (on SQLite the
ranges it selects are kept while the documents table is unchanged —
``kb/range_cache.py`` — and a document change invalidates them at once).
``RestrictedQuerySet.restrict`` (``kb.models``) is implemented here, at
the end of this module, with the same decision: a query of documents,
versions or chunks refuses to run until it is restricted or explicitly
unrestricted (tests/kb/test_chokepoint.py).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeGuard

import numpy as np
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import BigIntegerField, Q, QuerySet
from django.db.models.functions import Cast
from guardian.models import GroupObjectPermission, UserObjectPermission

from access.models import AnyUser, User
from access.policy import Compiled, attribute_equals, policy_and, policy_or
from access.selectors import Policies, ids_with_policies, key_collection_limit
from kb.exceptions import Forbidden, NotFound
from kb.models import (
    Chunk,
    Collection,
    Document,
    DocumentQuerySet,
    DocumentVersion,
    RestrictedQuerySet,
)
from kb.range_cache import RangeCache


class Role(StrEnum):
    """What a grant on a collection lets its holder do; each role includes the ones before it."""

    VIEWER = "viewer"  # search, ask, read, download
    EDITOR = "editor"  # + upload, replace, delete documents, set document attributes
    OWNER = "owner"    # + share, unshare, change the collection's policy


class CollectionPermission(StrEnum):
    """The django-guardian object permissions behind the roles (``kb.Collection`` Meta)."""

    VIEW = "view_collection"
    EDIT = "edit_collection"
    OWN = "own_collection"


ROLE_PERMISSIONS: dict[Role, tuple[CollectionPermission, ...]] = {
    Role.VIEWER: (CollectionPermission.VIEW,),
    Role.EDITOR: (CollectionPermission.VIEW, CollectionPermission.EDIT),
    Role.OWNER: (CollectionPermission.VIEW, CollectionPermission.EDIT, CollectionPermission.OWN),
}


def _active(user: AnyUser) -> TypeGuard[User]:
    return user is not None and user.is_authenticated and user.is_active


def _collections_with(user: AnyUser, permission: CollectionPermission) -> QuerySet[Collection]:
    """Live collections the user owns or holds ``permission`` on, directly or through any group.

    Grants through several groups add up.  Nothing is cached: a revoked grant
    or group membership is gone on the next call.  Deny by default.
    """
    if not _active(user):
        return Collection.objects.none()
    content_type = ContentType.objects.get_for_model(Collection)
    grants = {"content_type": content_type, "permission__codename": permission.value}
    # guardian keeps object ids as text; cast so the subquery compares integers on PostgreSQL.
    direct = (UserObjectPermission.objects.filter(user=user, **grants)
              .annotate(object_id=Cast("object_pk", BigIntegerField())).values("object_id"))
    via_groups = (GroupObjectPermission.objects.filter(group__user=user, **grants)
                  .annotate(object_id=Cast("object_pk", BigIntegerField())).values("object_id"))
    collections = Collection.objects.filter(
        Q(owner=user) | Q(pk__in=direct) | Q(pk__in=via_groups), deleted_at__isnull=True
    )
    return _within_key_limit(user, collections)


def _within_key_limit(user: AnyUser, collections: QuerySet[Collection]) -> QuerySet[Collection]:
    """An API key limited to some collections sees only those (the rest are 404, like anything unseen)."""
    limit = key_collection_limit(user)
    return collections if limit is None else collections.filter(pk__in=sorted(limit))


def readable_collections(user: AnyUser) -> QuerySet[Collection]:
    """Collections the user may read (viewer or better).  Deny by default."""
    return _collections_with(user, CollectionPermission.VIEW)


def editable_collections(user: AnyUser) -> QuerySet[Collection]:
    """Collections the user may add documents to, replace or delete them in (editor or better)."""
    return _collections_with(user, CollectionPermission.EDIT)


def owned_collections(user: AnyUser) -> QuerySet[Collection]:
    """Collections the user may share and set the policy of (the owner, or an owner grant)."""
    return _collections_with(user, CollectionPermission.OWN)


def collection_role(user: AnyUser, collection: Collection) -> Role | None:
    """The user's effective role on a collection (the strongest of all grants), or None."""
    for role, scope in ((Role.OWNER, owned_collections), (Role.EDITOR, editable_collections),
                        (Role.VIEWER, readable_collections)):
        if scope(user).filter(pk=collection.pk).exists():
            return role
    return None


def collection_get(user: AnyUser, collection_id: object, *, for_edit: bool = False,
                   for_owner: bool = False) -> Collection:
    """A collection the user may read; 404 (``NotFound``) otherwise.

    With ``for_edit`` / ``for_owner`` the user must also be an editor / the
    owner; one who may read it but not do that gets ``Forbidden`` (403).
    """
    pk = _as_pk(collection_id)
    if pk is None:
        raise NotFound("collection")
    collection = readable_collections(user).filter(pk=pk).first()
    if collection is None:
        raise NotFound("collection")
    if for_owner and not owned_collections(user).filter(pk=pk).exists():
        raise Forbidden("Only an owner of this collection may do this.")
    if for_edit and not editable_collections(user).filter(pk=pk).exists():
        raise Forbidden("Only an editor or owner of this collection may do this.")
    return collection


@dataclass(frozen=True)
class Member:
    kind: str        # "user" or "group"
    name: str
    role: Role
    implicit: bool   # the collection's owner: not a grant, cannot be removed


def _role_of(codenames: set[str]) -> Role | None:
    for role in (Role.OWNER, Role.EDITOR, Role.VIEWER):
        if {p.value for p in ROLE_PERMISSIONS[role]} <= codenames:
            return role
    return None


def collection_members(collection: Collection) -> list[Member]:
    """Who holds which role on a collection (the owner first), from the guardian grants."""
    content_type = ContentType.objects.get_for_model(Collection)
    grants = {"content_type": content_type, "object_pk": str(collection.pk)}
    users: dict[str, set[str]] = {}
    for username, codename in UserObjectPermission.objects.filter(**grants).values_list(
        "user__username", "permission__codename"
    ):
        users.setdefault(username, set()).add(codename)
    groups: dict[str, set[str]] = {}
    for name, codename in GroupObjectPermission.objects.filter(**grants).values_list(
        "group__name", "permission__codename"
    ):
        groups.setdefault(name, set()).add(codename)
    owner = collection.owner.get_username()
    members = [Member("user", owner, Role.OWNER, implicit=True)]
    for kind, table in (("user", users), ("group", groups)):
        for name in sorted(table):
            role = _role_of(table[name])
            if role is not None and not (kind == "user" and name == owner):
                members.append(Member(kind, name, role, implicit=False))
    return members


def _policy_filter(user: AnyUser, collection_ids: Sequence[int], policies: Policies) -> tuple[Compiled, list[str]]:
    """The ABAC part of the read decision over documents of these (readable) collections.

    A document passes when its collection's policy (if any) AND the platform
    policy (if any) allow it for this user.  ``policies`` are read (with the
    collections, ``access.selectors.ids_with_policies``) and compiled on every
    call, with the user's current attributes.  Also returns the
    policies that applied (``platform``, ``collection:<id>``), for the audit.
    """
    if not collection_ids:
        return False, []
    platform, per_collection, has_platform = policies
    attrs = (user.attributes if _active(user) else None) or {}
    open_ids = [c for c in collection_ids if c not in per_collection]
    condition: Compiled = Q(collection_id__in=open_ids) if open_ids else False
    for collection_id, policy in per_collection.items():
        allowed = policy.q(attrs) if policy is not None else False
        condition = policy_or(condition, policy_and(Q(collection_id=collection_id), allowed))
    if has_platform:
        condition = policy_and(condition, platform.q(attrs) if platform is not None else False)
    applied = (["platform"] if has_platform else []) + [f"collection:{c}" for c in sorted(per_collection)]
    return condition, applied


@dataclass(frozen=True)
class ReadScope:
    """One request's read decision, made once: what every read of that request is limited to.

    A search or an answer computes it before retrieving and records its
    ``rule`` in the audit event, so the event describes the decision that
    actually applied (and the grants and policies are read once, not twice).
    It belongs to the user it was made for; ``chunk_search`` refuses it for
    anyone else.
    """

    user_id: int | None
    requested: tuple[int, ...] | None   # the collection ids asked for (None: all readable)
    collection_ids: tuple[int, ...]     # readable collections within them (RBAC)
    condition: Compiled                 # the policies over documents of those collections (ABAC)
    applied: tuple[str, ...]            # which policies applied

    @property
    def rule(self) -> str:
        """How the scope was decided, for an audit event (the rule; no attribute values)."""
        return (f"rbac: {len(self.collection_ids)} readable collection(s); "
                f"abac: {', '.join(self.applied) if self.applied else 'no policy'}; deny by default")

    def filter(self, documents: DocumentQuerySet) -> DocumentQuerySet:
        """``documents`` limited to this scope: live, in a readable collection, passing every policy."""
        if self.condition is False:
            return documents.none()
        documents = documents.live().filter(collection_id__in=self.collection_ids)
        return documents if self.condition is True else documents.filter(self.condition)

    def documents(self) -> DocumentQuerySet:
        """The live documents this scope may read."""
        # A version's parsed text (the whole document) is read only where it is shown.
        return (Document.objects.restrict(self).select_related("latest_version__job", "current_version", "collection")
                .defer("latest_version__text", "current_version__text"))


def read_scope(
    user: AnyUser, *, collection: Collection | None = None, collection_ids: Sequence[int] | None = None
) -> ReadScope:
    """THE read decision: RBAC grant on the collection AND every applicable policy.  Deny by default."""
    collections = readable_collections(user)
    if collection is not None:
        collections = collections.filter(pk=collection.pk)
    if collection_ids is not None:
        collections = collections.filter(pk__in=list(collection_ids))
    ids, policies = ids_with_policies(collections)  # one round trip for RBAC's ids and the ABAC policies
    condition, applied = _policy_filter(user, ids, policies)
    return ReadScope(
        user_id=user.pk if _active(user) else None,
        requested=tuple(collection_ids) if collection_ids is not None else None,
        collection_ids=tuple(ids), condition=condition, applied=tuple(applied),
    )


def readable_documents(
    user: AnyUser, *, collection: Collection | None = None, collection_ids: Sequence[int] | None = None
) -> QuerySet[Document]:
    """The documents the read decision (``read_scope``) lets ``user`` read.

    Every read path (lists, document view, download, chunk preview, search,
    ask, the REST API) is built on this queryset or on ``read_scope``.
    """
    return read_scope(user, collection=collection, collection_ids=collection_ids).documents()


def document_readable(user: AnyUser, document: Document) -> bool:
    """The same decision for one loaded document, through the policies' Python predicates.

    ``document_get`` requires both this and ``readable_documents`` to agree,
    so a bug in either form denies rather than leaks.
    """
    if not _active(user) or document.deleted_at is not None:
        return False
    ids, (platform, per_collection, has_platform) = ids_with_policies(
        readable_collections(user).filter(pk=document.collection_id))
    if not ids:
        return False
    attrs = (user.attributes if _active(user) else None) or {}
    if document.collection_id in per_collection:
        policy = per_collection[document.collection_id]
        if policy is None or not policy.allows(attrs, document.attributes or {}):
            return False
    if has_platform and (platform is None or not platform.allows(attrs, document.attributes or {})):
        return False
    return True


def document_get(user: AnyUser, document_id: object, *, for_edit: bool = False) -> Document:
    """A document the user may read; ``NotFound`` (404) otherwise.

    With ``for_edit`` the user must also be an editor of its collection; a
    reader who is not gets ``Forbidden`` (403).
    """
    pk = _as_pk(document_id)
    document = readable_documents(user).filter(pk=pk).first() if pk is not None else None
    if document is None or not document_readable(user, document):
        raise NotFound("document")
    if for_edit and not editable_collections(user).filter(pk=document.collection_id).exists():
        raise Forbidden("Only an editor or owner of this collection may change its documents.")
    return document


def document_get_managed(user: AnyUser, document_id: object) -> Document:
    """A live document of a collection the user edits, whatever the policies say about reading it.

    For managing documents, never for reading their content: an editor must
    be able to label a new upload that the collection's policy hides until it
    is labelled (and to see the upload's status).  ``NotFound`` otherwise.
    """
    pk = _as_pk(document_id)
    document = (
        Document.objects.restrict(user, "manage")
        .filter(pk=pk)
        .select_related("latest_version__job", "current_version", "collection")
        .defer("latest_version__text", "current_version__text")
        .first()
        if pk is not None
        else None
    )
    if document is None:
        raise NotFound("document")
    return document


@dataclass(frozen=True)
class DocumentFilters:
    """What a search may be narrowed to beyond the read scope: file types, upload dates, attributes.

    Applied to the documents the chunk-id mask is built from (``searchable_ranges``), so both
    retrieval legs rank only passages that pass them, together with the permission filter: a
    filtered search still returns ``k`` results when ``k`` passages match.  Attribute pairs are
    ANDed; each holds when the document's attribute is that string or a list holding it.
    """

    kinds: tuple[str, ...] = ()                   # the searchable version's file type (pdf, docx, …): any of them
    uploaded_after: datetime | None = None        # the document was first uploaded at or after this
    uploaded_before: datetime | None = None       # … and before this
    attributes: tuple[tuple[str, str], ...] = ()  # (key, value) pairs, all of which must hold

    def __bool__(self) -> bool:
        return bool(self.kinds or self.uploaded_after or self.uploaded_before or self.attributes)

    def apply(self, documents: DocumentQuerySet) -> DocumentQuerySet:
        if self.kinds:
            documents = documents.filter(current_version__kind__in=list(self.kinds))
        if self.uploaded_after is not None:
            documents = documents.filter(created_at__gte=self.uploaded_after)
        if self.uploaded_before is not None:
            documents = documents.filter(created_at__lt=self.uploaded_before)
        for key, value in self.attributes:
            documents = documents.filter(attribute_equals(key, value))
        return documents

    def audit(self) -> dict[str, Any]:
        """The filters for an audit event: which were used, not the attribute values searched for."""
        return {"kinds": list(self.kinds),
                "uploaded_after": self.uploaded_after.isoformat() if self.uploaded_after else None,
                "uploaded_before": self.uploaded_before.isoformat() if self.uploaded_before else None,
                "attribute_keys": sorted({key for key, _ in self.attributes})}


def searchable_versions(
    user: AnyUser, *, collection_ids: Sequence[int] | None = None, document_ids: Sequence[int] | None = None
) -> QuerySet[DocumentVersion]:
    """The document versions a search by this user may return: current versions of readable documents."""
    scope = read_scope(user, collection_ids=collection_ids)
    versions = DocumentVersion.objects.restrict(scope).filter(current_for__isnull=False, chunk_id_start__isnull=False)
    return versions.filter(document_id__in=list(document_ids)) if document_ids is not None else versions


def searchable_ranges(
    user: AnyUser, *, collection_ids: Sequence[int] | None = None, document_ids: Sequence[int] | None = None,
    scope: ReadScope | None = None, filters: DocumentFilters | None = None,
) -> np.ndarray:
    """``(chunk_id_start, chunk_count)`` rows, as an ``(n, 2)`` int64 array, of every version
    ``searchable_versions`` returns.

    The same set, read from the readable documents' copy of their current
    version's range (``Document.make_current``): one scan of a covering
    index, no join.  It runs on every search, so the rows go from the
    cursor straight into the array rather than through model iteration.
    ``filters`` narrow the documents further (``DocumentFilters``), inside the same query.
    """
    scope = _scope_for(user, scope, collection_ids)
    documents = scope.documents()
    if document_ids is not None:
        documents = documents.filter(pk__in=list(document_ids))
    if filters:
        documents = filters.apply(documents)
    ranges = (documents.order_by().filter(search_chunk_start__isnull=False)
              .values_list("search_chunk_start", "search_chunk_count"))
    try:
        sql, params = ranges.query.sql_with_params()
    except EmptyResultSet:  # nothing readable, or a policy no document can pass
        return np.zeros((0, 2), dtype=np.int64)
    connection = connections[ranges.db]

    def fetch() -> np.ndarray:
        if connection.vendor == "postgresql":
            return _ranges_packed(connection, sql, params)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=2 * len(rows)).reshape(-1, 2)

    cache = _range_cache()
    used = {ranges.query.alias_map[alias].table_name for alias, refs in ranges.query.alias_refcount.items() if refs}
    if cache is None or used != {Document._meta.db_table}:  # off, or a query that reads other tables too
        return fetch()
    return cache.get(connection, sql, tuple(params), fetch)


def _ranges_packed(connection: Any, sql: str, params: Sequence[Any]) -> np.ndarray:
    """The ranges query's rows, packed by PostgreSQL into one ``bytea`` of big-endian int64 pairs.

    PostgreSQL reads the ranges on every search (no cache there, see
    ``kb.range_cache``): one row per readable document, 5,183 for SciFact,
    each turned into Python ints by the driver and back into an array — about
    a tenth of a search's CPU in the web process under load.  Packed by the
    server (``int8send``, ``string_agg``) they arrive as one value that numpy
    reads in place.  The same rows as the plain query.
    """
    packed_sql = ("SELECT string_agg(int8send(r.s) || int8send(r.c), ''::bytea) "
                  f"FROM (SELECT * FROM ({sql}) AS q (s, c) WHERE q.c IS NOT NULL) AS r")
    with connection.cursor() as cursor:
        cursor.execute(packed_sql, params)
        row = cursor.fetchone()
    if row is None or row[0] is None:
        return np.zeros((0, 2), dtype=np.int64)
    return np.frombuffer(bytes(row[0]), dtype=">i8").astype(np.int64).reshape(-1, 2)


@functools.cache
def _range_cache() -> RangeCache | None:
    size = settings.CAIRN_RANGE_CACHE_MB << 20
    return RangeCache(size) if size else None


def _scope_for(user: AnyUser, scope: ReadScope | None, collection_ids: Sequence[int] | None) -> ReadScope:
    """``scope`` when it was made for this user and these collections; a fresh decision when None."""
    if scope is None:
        return read_scope(user, collection_ids=collection_ids)
    requested = tuple(collection_ids) if collection_ids is not None else None
    if scope.user_id != (user.pk if _active(user) else None) or scope.requested != requested:
        raise ValueError("a read scope is used only for the user and collections it was decided for")
    return scope


def chunk_get(user: AnyUser, chunk_id: object) -> Chunk:
    pk = _as_pk(chunk_id)
    chunk = (
        Chunk.objects.restrict(user).filter(pk=pk, version__in=searchable_versions(user))
        .select_related("document").first()
        if pk is not None
        else None
    )
    if chunk is None:
        raise NotFound("chunk")
    return chunk


def _as_pk(value: object) -> int | None:
    try:
        pk = int(str(value))
    except (TypeError, ValueError):
        return None
    return pk if 0 < pk < 2**63 else None


def evaluable_collection_get(user: AnyUser, collection_id: object) -> Collection:
    """A collection whose golden set and evaluation runs ``user`` may manage; 404 (``NotFound``) otherwise.

    Editors and owners of the collection, and platform admins.  Everyone
    else — readers included — gets the same 404 as for a missing collection.
    """
    pk = _as_pk(collection_id)
    if pk is None or user is None or not user.is_authenticated or not user.is_active:
        raise NotFound("collection")
    scope = (_within_key_limit(user, Collection.objects.filter(deleted_at__isnull=True))
             if getattr(user, "is_platform_admin", False) else editable_collections(user))
    collection = scope.filter(pk=pk).first()
    if collection is None:
        raise NotFound("collection")
    return collection


def owned_collection_get(user: AnyUser, collection_id: object) -> Collection:
    """A live collection ``user`` owns (fusion tuning); everyone else gets the 404 of a missing collection."""
    pk = _as_pk(collection_id)
    if pk is None or user is None or not user.is_authenticated or not user.is_active:
        raise NotFound("collection")
    collection = owned_collections(user).filter(pk=pk, deleted_at__isnull=True).first()
    if collection is None:
        raise NotFound("collection")
    return collection


# --- the restriction every query of documents, versions and chunks goes through -------------------

ACTIONS = ("view", "change", "manage")


def _restrict(queryset: QuerySet[Any], who: AnyUser | ReadScope, action: str) -> QuerySet[Any]:
    """``RestrictedQuerySet.restrict``: the rows ``who`` may ``action`` (see ``kb.models``).

    ``view``: the read decision (``read_scope``; a decided ``ReadScope`` may
    stand for the user); ``change``: that, in a collection the user edits;
    ``manage``: live documents of collections the user edits, whatever the
    policies say about reading them (labelling a new upload the policy hides).
    Versions and chunks follow their documents.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    if isinstance(who, ReadScope) and action != "view":
        raise ValueError("a read scope only decides what may be viewed")
    if queryset.model is Document:
        return _documents(queryset, who, action)
    documents = _documents(Document.objects.unrestricted("the restriction's own subquery"), who, action)
    return queryset.filter(document__in=documents.values("pk"))


def _documents(documents: QuerySet[Any], who: AnyUser | ReadScope, action: str) -> QuerySet[Any]:
    if isinstance(who, ReadScope):
        return who.filter(documents)  # type: ignore[arg-type]  # Document's queryset, checked by the caller
    if action == "manage":
        return documents.filter(deleted_at__isnull=True, collection__in=editable_collections(who))
    readable = read_scope(who).filter(documents)  # type: ignore[arg-type]
    return readable.filter(collection__in=editable_collections(who)) if action == "change" else readable


RestrictedQuerySet.restrictor = _restrict
