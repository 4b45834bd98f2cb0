"""Reads of the knowledge base — every one scoped to what the user may read.

``readable_collections`` is the single chokepoint: every path that returns
documents, chunks or answers starts from it (tests/kb/test_chokepoint.py
fails the build if a read of documents or chunks bypasses it).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet

from access.models import User
from ingestion import api as ingestion_api
from kb.exceptions import NotFound
from kb.models import Chunk, Collection, Document, DocumentVersion
from kb.retrieval.hybrid import Hit, allowed_mask, hybrid_search
from kb.retrieval.index_store import IndexReader, IndexStore
from kb.retrieval.lexical import tokenize
from kb.retrieval.rerank import Reranker, load_reranker, rerank_order


def readable_collections(user: User | None) -> QuerySet[Collection]:
    """Collections the user may read.  Deny by default."""
    if user is None or not user.is_authenticated or not user.is_active:
        return Collection.objects.none()
    return Collection.objects.filter(owner=user, deleted_at__isnull=True)


def editable_collections(user: User | None) -> QuerySet[Collection]:
    """Collections the user may add documents to, replace or delete them in."""
    return readable_collections(user)


def collection_get(user: User | None, collection_id: object, *, for_edit: bool = False) -> Collection:
    pk = _as_pk(collection_id)
    scope = editable_collections(user) if for_edit else readable_collections(user)
    collection = scope.filter(pk=pk).first() if pk is not None else None
    if collection is None:
        raise NotFound("collection")
    return collection


def readable_documents(user: User | None, *, collection: Collection | None = None) -> QuerySet[Document]:
    documents = Document.objects.live().filter(collection__in=readable_collections(user))
    if collection is not None:
        documents = documents.filter(collection=collection)
    return documents.select_related("latest_version__job", "current_version", "collection")


def document_get(user: User | None, document_id: object, *, for_edit: bool = False) -> Document:
    pk = _as_pk(document_id)
    scope = editable_collections(user) if for_edit else readable_collections(user)
    document = (
        Document.objects.live()
        .filter(pk=pk, collection__in=scope)
        .select_related("latest_version__job", "current_version", "collection")
        .first()
        if pk is not None
        else None
    )
    if document is None:
        raise NotFound("document")
    return document


def searchable_versions(user: User | None, *, collection_ids: Sequence[int] | None = None) -> QuerySet[DocumentVersion]:
    """The document versions a search by this user may return: current versions of live, readable documents."""
    collections = readable_collections(user)
    if collection_ids is not None:
        collections = collections.filter(pk__in=collection_ids)
    return DocumentVersion.objects.filter(
        current_for__isnull=False,
        document__deleted_at__isnull=True,
        document__collection__in=collections,
        chunk_id_start__isnull=False,
    )


def chunk_get(user: User | None, chunk_id: object) -> Chunk:
    pk = _as_pk(chunk_id)
    chunk = (
        Chunk.objects.filter(pk=pk, version__in=searchable_versions(user)).select_related("document").first()
        if pk is not None
        else None
    )
    if chunk is None:
        raise NotFound("chunk")
    return chunk


@dataclass(frozen=True)
class SearchResult:
    chunk_id: int
    document_id: int
    collection_id: int
    title: str
    version: int
    page: int | None
    heading: str
    text: str
    char_start: int
    char_end: int
    score: float
    dense_rank: int | None
    lexical_rank: int | None
    # ``score`` is always the fusion (RRF) score.  When the cross-encoder
    # reranked the head of the list, results are ordered by ``rerank_score``
    # there (None for results past CAIRN_RERANK_TOP_N or when reranking is off).
    rerank_score: float | None = None


def chunk_search(
    user: User | None,
    query: str,
    *,
    collection_ids: Sequence[int] | None = None,
    k: int = 10,
    mode: str = "hybrid",
    rerank: bool = True,
) -> list[SearchResult]:
    """Hybrid search restricted, in both legs, to what ``user`` may read.

    With a reranker configured (and ``rerank``), the fused top
    ``CAIRN_RERANK_TOP_N`` are re-ordered by the cross-encoder; it only ever
    sees chunks the permission filter already let through.
    """
    ranges = list(searchable_versions(user, collection_ids=collection_ids).values_list("chunk_id_start", "chunk_count"))
    if not ranges or not query.strip():
        return []
    snapshot = index_reader().snapshot()
    if snapshot is None:
        return []
    mask = allowed_mask(ranges)
    query_vector = ingestion_api.embed_query(query) if mode in ("hybrid", "dense") else None
    reranker = active_reranker() if rerank else None
    hits = hybrid_search(
        snapshot,
        query_vector=query_vector,
        query_tokens=tokenize(query),
        allowed=mask,
        k=max(k, settings.CAIRN_RERANK_TOP_N) if reranker is not None else k,
        candidates=settings.CAIRN_SEARCH_CANDIDATES,
        rrf_k=settings.CAIRN_RRF_K,
        mode=mode,
    )
    results = _materialise(hits)
    if reranker is not None:
        results = _rerank(reranker, query, results, top_n=settings.CAIRN_RERANK_TOP_N)
    return results[:k]


def active_reranker() -> Reranker | None:
    """The configured cross-encoder (loaded once per process), or None when CAIRN_RERANKER is empty."""
    return load_reranker(settings.CAIRN_RERANKER, device=settings.CAIRN_EMBED_DEVICE,
                         batch_size=settings.CAIRN_RERANK_BATCH)


def _rerank(reranker: Reranker, query: str, results: list[SearchResult], *, top_n: int) -> list[SearchResult]:
    head, tail = results[:top_n], results[top_n:]
    passages = [r.text if not r.heading or r.text.startswith(r.heading) else f"{r.heading}\n{r.text}" for r in head]
    scores = reranker.score(query, passages)
    reranked = [dataclasses.replace(head[i], rerank_score=float(scores[i])) for i in rerank_order(scores)]
    return reranked + tail


def _materialise(hits: list[Hit]) -> list[SearchResult]:
    chunks = Chunk.objects.filter(pk__in=[hit.chunk_id for hit in hits]).select_related("document", "version")
    by_id = {chunk.pk: chunk for chunk in chunks}
    results: list[SearchResult] = []
    for hit in hits:
        chunk = by_id.get(hit.chunk_id)
        if chunk is None:  # purged between the index read and this query
            continue
        results.append(
            SearchResult(
                chunk_id=chunk.pk,
                document_id=chunk.document_id,
                collection_id=chunk.document.collection_id,
                title=chunk.document.title,
                version=chunk.version.number,
                page=chunk.page,
                heading=chunk.heading,
                text=chunk.text,
                char_start=chunk.char_start,
                char_end=chunk.char_end,
                score=hit.score,
                dense_rank=hit.dense_rank,
                lexical_rank=hit.lexical_rank,
            )
        )
    return results


_reader_lock = threading.Lock()


@functools.cache
def _reader_for(model_id: str, index_dir: str) -> IndexReader:
    from pathlib import Path

    return IndexReader(IndexStore(Path(index_dir), model_id))


def index_reader() -> IndexReader:
    """This process's reader of the current embedding model's index."""
    with _reader_lock:
        return _reader_for(ingestion_api.embedding_model_id(), str(settings.CAIRN_INDEX_DIR))


def _as_pk(value: object) -> int | None:
    try:
        pk = int(str(value))
    except (TypeError, ValueError):
        return None
    return pk if 0 < pk < 2**63 else None


@dataclass(frozen=True)
class AuditedChunk:
    """What an audit reviewer sees of a chunk an audit event says was served."""

    chunk_id: int
    found: bool            # False: purged since (compaction removed the row)
    document_id: int | None = None
    title: str = ""
    page: int | None = None
    snippet: str = ""
    document_deleted: bool = False


AUDIT_SNIPPET_CHARS = 240


def audited_chunks(reviewer: User | None, chunk_ids: Sequence[int]) -> list[AuditedChunk]:
    """The chunks an audit event served, for an audit reviewer (admin/auditor) only.

    Reviewers see what was served to someone else, so this is deliberately
    not scoped by the reviewer's own grants; it is scoped by the reviewer's
    role instead and shows only chunk id, document title, page and a short
    snippet.  Chunks purged since are reported as such.
    """
    from access.audit_review import can_review_audit

    if not can_review_audit(reviewer):
        raise NotFound("audit event")
    wanted = [int(c) for c in chunk_ids][:1000]
    rows = Chunk.objects.filter(pk__in=wanted).select_related("document")
    by_id = {chunk.pk: chunk for chunk in rows}
    out: list[AuditedChunk] = []
    for chunk_id in wanted:
        chunk = by_id.get(chunk_id)
        if chunk is None:
            out.append(AuditedChunk(chunk_id=chunk_id, found=False))
            continue
        text = " ".join(chunk.text.split())
        out.append(AuditedChunk(
            chunk_id=chunk_id, found=True, document_id=chunk.document_id, title=chunk.document.title,
            page=chunk.page,
            snippet=text if len(text) <= AUDIT_SNIPPET_CHARS else text[:AUDIT_SNIPPET_CHARS].rstrip() + "…",
            document_deleted=chunk.document.deleted_at is not None,
        ))
    return out


def evaluable_collection_get(user: User | None, collection_id: object) -> Collection:
    """A collection whose golden set and evaluation runs ``user`` may manage; 404 (``NotFound``) otherwise.

    Editors and owners of the collection, and platform admins.  Everyone
    else — readers included — gets the same 404 as for a missing collection.
    """
    pk = _as_pk(collection_id)
    if pk is None or user is None or not user.is_authenticated or not user.is_active:
        raise NotFound("collection")
    scope = (Collection.objects.filter(deleted_at__isnull=True) if getattr(user, "is_platform_admin", False)
             else editable_collections(user))
    collection = scope.filter(pk=pk).first()
    if collection is None:
        raise NotFound("collection")
    return collection
