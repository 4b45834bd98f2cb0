"""Hybrid search over one index snapshot, inside an allowed set of chunk ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kb.retrieval.fusion import reciprocal_rank_fusion
from kb.retrieval.index_store import IndexSnapshot


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    score: float                  # the fused RRF score
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


def hybrid_search(
    snapshot: IndexSnapshot,
    *,
    query_vector: np.ndarray | None,
    query_tokens: Sequence[str],
    allowed: np.ndarray,
    k: int,
    candidates: int = 100,
    rrf_k: int = 60,
    mode: str = "hybrid",
) -> list[Hit]:
    """Both legs search only inside ``allowed``; their lists are fused with RRF.

    ``mode`` is ``hybrid``, ``dense`` or ``lexical`` (one leg alone, for
    evaluation and for users who want exact keyword matching).
    """
    if not allowed.any():
        return []
    depth = max(k, candidates)
    legs: list[np.ndarray] = []
    dense_scores: dict[int, float] = {}
    lexical_scores: dict[int, float] = {}
    use_lexical = mode in ("hybrid", "lexical")
    dense_ids = lexical_ids = np.zeros(0, np.int64)
    if mode in ("hybrid", "dense") and query_vector is not None:
        dense_ids, scores = snapshot.dense.search(query_vector, depth, allowed)
        dense_scores = dict(zip(dense_ids.tolist(), scores.tolist(), strict=True))
    if use_lexical and query_tokens:
        lexical_ids, scores = snapshot.lexical.search(query_tokens, depth, allowed)
        lexical_scores = dict(zip(lexical_ids.tolist(), scores.tolist(), strict=True))
    legs = [dense_ids, lexical_ids]
    fused = reciprocal_rank_fusion(legs, k=rrf_k, limit=k)
    return [
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
