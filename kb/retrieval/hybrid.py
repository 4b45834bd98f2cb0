"""Hybrid search over one index snapshot, inside an allowed set of chunk ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kb.retrieval.fusion import FusionConfig, Leg, fuse
from kb.retrieval.index_store import IndexSnapshot


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    score: float                  # the fused score (RRF or convex; a lone leg's raw score)
    dense_rank: int | None        # 1-based rank in the dense leg
    lexical_rank: int | None      # 1-based rank in the BM25 leg
    dense_score: float | None
    lexical_score: float | None


def allowed_mask(ranges: np.ndarray | Sequence[tuple[int, int]]) -> np.ndarray:
    """Boolean mask by chunk id from ``(start, count)`` id ranges (pairs, or an ``(n, 2)`` array).

    Vectorised and proportional to the ids *allowed*, not to the index size:
    the allowed ids are generated as ``arange(total) + repeat(offset, count)``
    and set in one scatter — for a user who may read 10 % of 1M chunks that
    is ~1 ms, against ~7 ms for a difference array over the whole id space.
    """
    spans = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
    spans = spans[spans[:, 1] > 0]
    if len(spans) == 0:
        return np.zeros(0, dtype=bool)
    starts = spans[:, 0]
    counts = spans[:, 1]
    size = int((starts + counts).max())
    # Position i of the concatenated ranges belongs to range r; its id is
    # i - (ids before range r) + start_r.
    before = np.cumsum(counts) - counts
    ids = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - before, counts)
    mask = np.zeros(size, dtype=bool)
    mask[ids] = True
    return mask


@dataclass(frozen=True)
class Retrieval:
    """A fused hit list and the two legs it came from (raw scores, best first), for the evidence check."""

    hits: list[Hit]
    dense: Leg
    lexical: Leg


def hybrid_retrieve(
    snapshot: IndexSnapshot,
    *,
    query_vector: np.ndarray | None,
    query_tokens: Sequence[str],
    allowed: np.ndarray,
    k: int,
    fusion: FusionConfig | None = None,
    mode: str = "hybrid",
) -> Retrieval:
    """Both legs search only inside ``allowed``; their lists are fused as ``fusion`` says.

    ``mode`` is ``hybrid``, ``dense`` or ``lexical`` (one leg alone, for
    evaluation and for users who want exact keyword matching).  Each leg is
    asked for ``max(k, its depth)`` candidates.
    """
    fusion = fusion or FusionConfig()
    dense = lexical = Leg.empty()
    if not allowed.any():
        return Retrieval([], dense, lexical)
    if mode in ("hybrid", "dense") and query_vector is not None:
        dense = Leg(*snapshot.dense.search(query_vector, max(k, fusion.dense_depth), allowed))
    if mode in ("hybrid", "lexical") and query_tokens:
        lexical = Leg(*snapshot.lexical.search(query_tokens, max(k, fusion.lexical_depth), allowed))
    if mode == "hybrid":
        fused = fuse(dense, lexical, fusion, limit=k)
    else:  # one leg alone: its own order and raw score
        leg, slot = (dense, 0) if mode == "dense" else (lexical, 1)
        fused = [(int(doc), float(score), (i + 1, None) if slot == 0 else (None, i + 1))
                 for i, (doc, score) in enumerate(zip(leg.ids[:k].tolist(), leg.scores[:k].tolist(), strict=True))]
    dense_scores = dict(zip(dense.ids.tolist(), dense.scores.tolist(), strict=True))
    lexical_scores = dict(zip(lexical.ids.tolist(), lexical.scores.tolist(), strict=True))
    hits = [
        Hit(
            chunk_id=chunk_id,
            score=score,
            dense_rank=ranks[0],
            lexical_rank=ranks[1],
            dense_score=dense_scores.get(chunk_id),
            lexical_score=lexical_scores.get(chunk_id),
        )
        for chunk_id, score, ranks in fused
    ]
    return Retrieval(hits, dense, lexical)


def hybrid_search(
    snapshot: IndexSnapshot,
    *,
    query_vector: np.ndarray | None,
    query_tokens: Sequence[str],
    allowed: np.ndarray,
    k: int,
    fusion: FusionConfig | None = None,
    mode: str = "hybrid",
) -> list[Hit]:
    """``hybrid_retrieve``'s fused hits only."""
    return hybrid_retrieve(snapshot, query_vector=query_vector, query_tokens=query_tokens, allowed=allowed, k=k,
                           fusion=fusion, mode=mode).hits
