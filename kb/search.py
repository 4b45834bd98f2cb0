"""Search: a query → the passages of the user's read scope that answer it best.

Both retrieval legs (FAISS vectors, BM25 terms) search only inside the
chunk ids the read scope allows (``selectors.searchable_ranges``); their
lists are fused, optionally reranked by a cross-encoder, and turned into
``SearchResult`` rows.  ``search`` is the audited entry point views and
commands call; ``chunk_search`` is the same search without the audit event
(answering and golden sets record their own events).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from access.models import AnyUser, User
from access.services import Actor, audit_record
from kb import index
from kb.metrics import SEARCH_LATENCY, timed
from kb.models import Chunk, Collection
from kb.retrieval.evidence import Evidence, Thresholds, evidence_of
from kb.retrieval.fusion import FusionConfig, Leg
from kb.retrieval.hybrid import Hit, Retrieval, allowed_mask, hybrid_retrieve
from kb.retrieval.index_store import IndexSnapshot
from kb.retrieval.legcheck import checked_fusion
from kb.retrieval.rerank import Reranker, rerank_order
from kb.retrieval.tokenize import tokenize
from kb.selectors import DocumentFilters, ReadScope, read_scope, searchable_ranges


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
    # ``score`` is always the fusion score (CAIRN_FUSION).  When the cross-encoder
    # reranked the head of the list, results are ordered by ``rerank_score``
    # there (None for results past CAIRN_RERANK_TOP_N or when reranking is off).
    rerank_score: float | None = None


def fusion_config() -> FusionConfig:
    """The fusion the settings name (``CAIRN_FUSION`` …); leg depths default to ``CAIRN_SEARCH_CANDIDATES``."""
    depth = settings.CAIRN_SEARCH_CANDIDATES
    return FusionConfig(
        method=settings.CAIRN_FUSION, weight=settings.CAIRN_FUSION_WEIGHT, norm=settings.CAIRN_FUSION_NORM,
        rrf_k=settings.CAIRN_RRF_K, dense_depth=settings.CAIRN_DENSE_CANDIDATES or depth,
        lexical_depth=settings.CAIRN_LEXICAL_CANDIDATES or depth,
    )


def default_fusion(snapshot: IndexSnapshot | None = None) -> FusionConfig:
    """The fusion a search uses where no collection's tuned choice applies: the settings', leg-checked.

    ``kb.retrieval.legcheck``: a leg that cannot find the passages its own text spans came from (the bundled
    English embedder on Chinese documents) has its weight scaled down; otherwise ``fusion_config()``.
    """
    if snapshot is None:
        snapshot = index.index_reader().snapshot()
    return checked_fusion(fusion_config(), index.leg_check(snapshot) if snapshot is not None else None)


def collection_fusion(collection_ids: Sequence[int] | None) -> FusionConfig | None:
    """The fusion stored on the one collection searched (``cairn_tune``), or None: use the settings'.

    A stale choice — marked after a full re-index (``kb.tuning.fusion_mark_stale``), or tuned with
    another embedding model than the active one — is not used: the settings' default is the safe
    fallback until an owner re-runs the tuning.
    """
    if not collection_ids or len(collection_ids) != 1:
        return None
    stored = Collection.objects.filter(pk=collection_ids[0]).values_list("fusion", flat=True).first()
    if not stored or stored.get("stale"):
        return None
    if stored.get("embedding_model") and stored["embedding_model"] != index.embedding_model_id():
        return None
    return fusion_from_dict(stored)


def fusion_from_dict(stored: dict[str, Any]) -> FusionConfig | None:
    """A stored choice as a ``FusionConfig`` (without a stored ``depth``, the settings' leg depths); None if it
    no longer parses."""
    default = fusion_config()
    try:
        config = dataclasses.replace(default, method=str(stored["method"]), weight=float(stored["weight"]),
                                     norm=str(stored.get("norm", default.norm)),
                                     rrf_k=int(stored.get("rrf_k", default.rrf_k)))
        if stored.get("depth") is not None:
            depth = int(stored["depth"])
            config = dataclasses.replace(config, dense_depth=depth, lexical_depth=depth)
        return config
    except (KeyError, TypeError, ValueError):
        return None


def no_match_thresholds() -> Thresholds:
    """The "no good match" thresholds the settings name (``CAIRN_NO_MATCH_*``)."""
    return Thresholds(dense=settings.CAIRN_NO_MATCH_DENSE, margin=settings.CAIRN_NO_MATCH_MARGIN,
                      lexical=settings.CAIRN_NO_MATCH_LEXICAL, agreement=settings.CAIRN_NO_MATCH_AGREEMENT,
                      coverage_alone=settings.CAIRN_NO_MATCH_COVERAGE_ALONE,
                      dense_unseen=settings.CAIRN_NO_MATCH_DENSE_UNSEEN,
                      coherence=settings.CAIRN_NO_MATCH_COHERENCE)


NO_EVIDENCE = Evidence(dense_best=None, lexical_coverage=None, no_good_match=True)


@dataclass(frozen=True)
class SearchOutcome:
    """Results plus how strong the legs' best evidence was (``evidence.no_good_match``)."""

    results: list[SearchResult]
    evidence: Evidence


def chunk_search(
    user: AnyUser,
    query: str,
    *,
    collection_ids: Sequence[int] | None = None,
    k: int = 10,
    mode: str = "hybrid",
    rerank: bool = True,
    document_ids: Sequence[int] | None = None,
    scope: ReadScope | None = None,
    fusion: FusionConfig | None = None,
    filters: DocumentFilters | None = None,
) -> list[SearchResult]:
    """Hybrid search restricted, in both legs, to what ``user`` may read (see ``chunk_search_outcome``)."""
    return chunk_search_outcome(user, query, collection_ids=collection_ids, k=k, mode=mode, rerank=rerank,
                                document_ids=document_ids, scope=scope, fusion=fusion, filters=filters).results


def chunk_search_outcome(
    user: AnyUser,
    query: str,
    *,
    collection_ids: Sequence[int] | None = None,
    k: int = 10,
    mode: str = "hybrid",
    rerank: bool = True,
    document_ids: Sequence[int] | None = None,
    scope: ReadScope | None = None,
    fusion: FusionConfig | None = None,
    filters: DocumentFilters | None = None,
) -> SearchOutcome:
    """Hybrid search restricted, in both legs, to what ``user`` may read, with the evidence verdict.

    With a reranker configured (and ``rerank``), the fused top
    ``CAIRN_RERANK_TOP_N`` are re-ordered by the cross-encoder; it only ever
    sees chunks the permission filter already let through.  ``scope``: the
    caller's ``read_scope(user, collection_ids=…)``, when it audits it.
    ``fusion``: how to fuse the legs (default: the one collection's tuned
    choice, else the settings').  ``filters``: file types, upload dates and attributes the
    documents must have, applied with the permission filter before either leg ranks anything.
    """
    with timed(SEARCH_LATENCY, leg="total"):
        return _chunk_search(user, query, collection_ids=collection_ids, k=k, mode=mode, rerank=rerank,
                             document_ids=document_ids, scope=scope, fusion=fusion, filters=filters)


def _chunk_search(user: AnyUser, query: str, *, collection_ids: Sequence[int] | None, k: int, mode: str,
                  rerank: bool, document_ids: Sequence[int] | None, scope: ReadScope | None,
                  fusion: FusionConfig | None, filters: DocumentFilters | None) -> SearchOutcome:
    with timed(SEARCH_LATENCY, leg="scope"):
        ranges = searchable_ranges(user, collection_ids=collection_ids, document_ids=document_ids, scope=scope,
                                   filters=filters)
    if not len(ranges) or not query.strip():
        return SearchOutcome([], NO_EVIDENCE)
    snapshot = index.index_reader().snapshot()
    if snapshot is None:
        return SearchOutcome([], NO_EVIDENCE)
    mask = allowed_mask(ranges)
    with timed(SEARCH_LATENCY, leg="embed"):
        query_vector = index.embed_query(query) if mode in ("hybrid", "dense") else None
    query_tokens = tokenize(query)
    reranker = index.active_reranker() if rerank else None
    with timed(SEARCH_LATENCY, leg="retrieve"):
        retrieval = hybrid_retrieve(
            snapshot,
            query_vector=query_vector,
            query_tokens=query_tokens,
            allowed=mask,
            k=max(k, settings.CAIRN_RERANK_TOP_N) if reranker is not None else k,
            fusion=fusion or collection_fusion(collection_ids) or default_fusion(snapshot),
            mode=mode,
        )
    with timed(SEARCH_LATENCY, leg="evidence"):
        evidence = evidence_of(retrieval, snapshot.lexical, query_tokens, thresholds=no_match_thresholds(),
                               lexical_ran=mode in ("hybrid", "lexical"),
                               null=lambda: index.no_match_null(snapshot))
    with timed(SEARCH_LATENCY, leg="materialise"):
        results = _materialise(retrieval.hits)
    if reranker is not None:
        with timed(SEARCH_LATENCY, leg="rerank"):
            results = _rerank(reranker, query, results, top_n=settings.CAIRN_RERANK_TOP_N)
    return SearchOutcome(results[:k], evidence)


def chunk_legs(
    user: AnyUser, query: str, *, collection_id: int, depth: int = 200
) -> tuple[Retrieval, dict[int, int]]:
    """Both legs' raw lists for ``query`` inside what ``user`` may read of one collection, unfused.

    Returns the legs and each of their chunks' document id, for tuning the
    fusion offline (``kb.tuning``): the permission filter runs exactly as in
    ``chunk_search``.
    """
    empty = Retrieval([], Leg.empty(), Leg.empty())
    ranges = searchable_ranges(user, collection_ids=[collection_id])
    snapshot = index.index_reader().snapshot()
    if not len(ranges) or not query.strip() or snapshot is None:
        return empty, {}
    retrieval = hybrid_retrieve(snapshot, query_vector=index.embed_query(query), query_tokens=tokenize(query),
                                allowed=allowed_mask(ranges), k=depth,
                                fusion=dataclasses.replace(fusion_config(), dense_depth=depth, lexical_depth=depth))
    ids = set(retrieval.dense.ids.tolist()) | set(retrieval.lexical.ids.tolist())
    documents = dict(Chunk.objects.unrestricted("legs of the read scope's chunk-id mask")
                     .filter(pk__in=ids).values_list("id", "document_id"))
    return retrieval, documents


def _rerank(reranker: Reranker, query: str, results: list[SearchResult], *, top_n: int) -> list[SearchResult]:
    head, tail = results[:top_n], results[top_n:]
    passages = [r.text if not r.heading or r.text.startswith(r.heading) else f"{r.heading}\n{r.text}" for r in head]
    scores = reranker.score(query, passages)
    reranked = [dataclasses.replace(head[i], rerank_score=float(scores[i])) for i in rerank_order(scores)]
    return reranked + tail


_RESULT_FIELDS = ("document_id", "document__collection_id", "document__title", "version__number", "page", "heading",
                  "text", "char_start", "char_end")


def _materialise(hits: list[Hit]) -> list[SearchResult]:
    # The hits came out of the scope's chunk-id mask: no second permission subquery on the hot path.
    # Only what a result shows (not the vector, nor the version's whole parsed text), as plain rows: a
    # search materialises its hits on every request, and building three model instances per hit cost more
    # than the query.
    rows = (Chunk.objects.unrestricted("hits of the read scope's chunk-id mask")
            .filter(pk__in=[hit.chunk_id for hit in hits]).values_list("id", *_RESULT_FIELDS))
    by_id = {row[0]: row for row in rows}
    results: list[SearchResult] = []
    for hit in hits:
        row = by_id.get(hit.chunk_id)
        if row is None:  # purged between the index read and this query
            continue
        (chunk_id, document_id, collection_id, title, version, page, heading, text, char_start, char_end) = row
        results.append(
            SearchResult(
                chunk_id=chunk_id,
                document_id=document_id,
                collection_id=collection_id,
                title=title,
                version=version,
                page=page,
                heading=heading,
                text=text,
                char_start=char_start,
                char_end=char_end,
                score=hit.score,
                dense_rank=hit.dense_rank,
                lexical_rank=hit.lexical_rank,
            )
        )
    return results


def search(
    *, user: User, actor: Actor, query: str, collection_ids: Sequence[int] | None = None, k: int = 10,
    mode: str = "hybrid", rerank: bool = True, document_ids: Sequence[int] | None = None,
    filters: DocumentFilters | None = None,
) -> list[SearchResult]:
    """A permission-scoped search, recorded in the audit log with the chunk ids served."""
    return search_outcome(user=user, actor=actor, query=query, collection_ids=collection_ids, k=k, mode=mode,
                          rerank=rerank, document_ids=document_ids, filters=filters).results


def search_outcome(
    *, user: User, actor: Actor, query: str, collection_ids: Sequence[int] | None = None, k: int = 10,
    mode: str = "hybrid", rerank: bool = True, document_ids: Sequence[int] | None = None,
    filters: DocumentFilters | None = None,
) -> SearchOutcome:
    """``search`` with the evidence verdict (``no_good_match``), audited the same way."""
    scope = read_scope(user, collection_ids=collection_ids)
    outcome = chunk_search_outcome(user, query, collection_ids=collection_ids, k=k, mode=mode, rerank=rerank,
                                   document_ids=document_ids, scope=scope, filters=filters)
    results = outcome.results
    audit_record(
        actor=actor, action="kb.search", target_type="collection",
        target_id=",".join(str(c) for c in collection_ids) if collection_ids else "*",
        rule=scope.rule,
        detail={"query_chars": len(query), "k": k, "mode": mode, "chunks_served": [r.chunk_id for r in results],
                "reranked": any(r.rerank_score is not None for r in results),
                "no_good_match": outcome.evidence.no_good_match,
                **({"filters": filters.audit()} if filters else {})},
    )
    return outcome
