"""Reciprocal-rank fusion of ranked lists."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def reciprocal_rank_fusion(
    ranked: Sequence[np.ndarray], *, k: int = 60, limit: int | None = None
) -> list[tuple[int, float, tuple[int | None, ...]]]:
    """Fuse ranked id lists: ``score(d) = Σ 1 / (k + rank_i(d))`` with 1-based ranks.

    Returns ``(id, score, ranks)`` best first, where ``ranks[i]`` is the
    1-based rank in list ``i`` or None.  Ties break on the smaller id so
    results are deterministic.
    """
    scores: dict[int, float] = {}
    ranks: dict[int, list[int | None]] = {}
    for list_index, ids in enumerate(ranked):
        for position, raw_id in enumerate(ids.tolist() if isinstance(ids, np.ndarray) else ids):
            doc = int(raw_id)
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + position + 1)
            slot = ranks.setdefault(doc, [None] * len(ranked))
            if slot[list_index] is None:
                slot[list_index] = position + 1
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    if limit is not None:
        ordered = ordered[:limit]
    return [(doc, score, tuple(ranks[doc])) for doc, score in ordered]
