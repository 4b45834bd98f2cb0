"""Fusion of the dense and lexical legs: weighted reciprocal-rank fusion or a convex combination.

Two families (Bruch et al. 2023, "An Analysis of Fusion Functions for Hybrid
Retrieval"):

* **RRF** — ``score(d) = Σ_i 2·w_i / (k + rank_i(d))`` (``w = 0.5``: textbook RRF).  Uses ranks only, so it
  throws away how far ahead a leg's first hit is; with equal weights it drags
  the fused list towards the weaker leg when one leg is much better.
* **convex** — ``score(d) = w · N(dense(d)) + (1 − w) · N(lexical(d))`` with
  each leg's raw scores normalised over its own candidate list, by min-max
  (``(s − min) / (max − min)``) or z-score (``(s − mean) / std``).  A document
  a leg did not return gets that leg's floor (0 for min-max, the lowest z
  for z-score): it scored at most as well as the leg's last candidate.

A leg with weight 0 is left out entirely, so ``w = 0`` / ``w = 1`` reproduce
the lexical / dense leg's own order.  Ties break on the best rank the
document reached in any leg, then on the smaller id: results are
deterministic.  Plain Python and numpy: nothing here knows about Django.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METHODS = ("rrf", "convex")
DEFAULT_DEPTH = 100  # candidates per leg unless configured (CAIRN_SEARCH_CANDIDATES)
NORMS = ("minmax", "zscore")


@dataclass(frozen=True)
class FusionConfig:
    """How the two legs are fused; ``weight`` is the dense leg's share (the lexical leg gets ``1 − weight``)."""

    method: str = "convex"
    weight: float = 0.5
    norm: str = "minmax"
    rrf_k: int = 60
    dense_depth: int = DEFAULT_DEPTH      # candidates asked of the dense leg
    lexical_depth: int = DEFAULT_DEPTH    # candidates asked of the lexical leg
    checked: bool = False                 # the weight was adjusted by the leg check (kb.retrieval.legcheck)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"fusion method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.norm not in NORMS:
            raise ValueError(f"fusion normalisation must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"fusion weight must be in [0, 1], got {self.weight}")
        if self.rrf_k < 1 or self.dense_depth < 1 or self.lexical_depth < 1:
            raise ValueError("rrf_k and the leg depths must be positive")

    def describe(self) -> str:
        text = f"rrf k={self.rrf_k} w={self.weight:g}" if self.method == "rrf" else f"convex {self.norm} w={self.weight:g}"
        if (self.dense_depth, self.lexical_depth) != (DEFAULT_DEPTH, DEFAULT_DEPTH):  # named only when not the default
            depth = self.dense_depth if self.dense_depth == self.lexical_depth else f"{self.dense_depth}/{self.lexical_depth}"
            text += f" depth={depth}"
        if self.checked:
            text += " (leg check)"
        return text


@dataclass(frozen=True)
class Leg:
    """One leg's result: ids best first and their raw scores (same length)."""

    ids: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Leg:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float32))


Fused = list[tuple[int, float, tuple[int | None, ...]]]


def _id_list(ids: np.ndarray | Sequence[int]) -> list[int]:
    return [int(i) for i in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]


def _ranks(legs: Sequence[np.ndarray | Sequence[int]]) -> dict[int, list[int | None]]:
    ranks: dict[int, list[int | None]] = {}
    for list_index, ids in enumerate(legs):
        for position, doc in enumerate(_id_list(ids)):
            slot = ranks.setdefault(doc, [None] * len(legs))
            if slot[list_index] is None:
                slot[list_index] = position + 1
    return ranks


def _ordered(scores: dict[int, float], ranks: dict[int, list[int | None]], limit: int | None,
             used: Sequence[bool]) -> Fused:
    """Best first; ties on the best rank in a leg that counted (``used``), then on the smaller id."""
    def best_rank(doc: int) -> int:
        return min((r for r, counted in zip(ranks[doc], used, strict=True) if r is not None and counted),
                   default=1 << 62)

    ordered = sorted(scores.items(), key=lambda item: (-item[1], best_rank(item[0]), item[0]))
    if limit is not None:
        ordered = ordered[:limit]
    return [(doc, score, tuple(ranks[doc])) for doc, score in ordered]


def reciprocal_rank_fusion(
    ranked: Sequence[np.ndarray | Sequence[int]], *, k: int = 60, limit: int | None = None,
    weights: Sequence[float] | None = None,
) -> Fused:
    """Fuse ranked id lists: ``score(d) = Σ w_i / (k + rank_i(d))`` with 1-based ranks (``w_i`` = 1 by default).

    Returns ``(id, score, ranks)`` best first, where ``ranks[i]`` is the
    1-based rank in list ``i`` or None.  A list of weight 0 is ignored.
    """
    weights = [1.0] * len(ranked) if weights is None else list(weights)
    if len(weights) != len(ranked):
        raise ValueError("one weight per ranked list")
    ranks = _ranks(ranked)
    scores: dict[int, float] = {}
    for list_index, ids in enumerate(ranked):
        weight = weights[list_index]
        if weight <= 0:
            continue
        for position, doc in enumerate(dict.fromkeys(_id_list(ids))):
            scores[doc] = scores.get(doc, 0.0) + weight / (k + position + 1)
    return _ordered(scores, ranks, limit, [w > 0 for w in weights])


def normalise(scores: np.ndarray, norm: str) -> np.ndarray:
    """One leg's raw scores mapped by min-max to [0, 1] or to z-scores; a constant list maps to all 1 / all 0."""
    values = np.asarray(scores, dtype=np.float64)
    if len(values) == 0:
        return values
    if norm == "minmax":
        low, high = float(values.min()), float(values.max())
        return (values - low) / (high - low) if high > low else np.ones_like(values)
    if norm == "zscore":
        std = float(values.std())
        return (values - float(values.mean())) / std if std > 0 else np.zeros_like(values)
    raise ValueError(f"unknown normalisation {norm!r}")


def _floor(normalised: np.ndarray, norm: str) -> float:
    """The normalised score of a document the leg did not return: below or at its last candidate.

    Min-max: 0 (the last candidate's value, or below a lone or constant list's 1).  Z-score: the lowest
    z, or one standard unit below a constant list's 0.
    """
    if norm == "minmax":
        return 0.0
    low = float(normalised.min())
    return low if float(normalised.max()) > low else -1.0


def convex_fusion(
    legs: Sequence[Leg], *, weights: Sequence[float], norm: str = "minmax", limit: int | None = None
) -> Fused:
    """``score(d) = Σ_i w_i · N_i(d)``; ``N_i`` is leg i's normalised score, its minimum for a document it missed."""
    if len(weights) != len(legs):
        raise ValueError("one weight per leg")
    ranks = _ranks([leg.ids for leg in legs])
    scores: dict[int, float] = {}
    used = [(leg, weight) for leg, weight in zip(legs, weights, strict=True) if weight > 0 and len(leg.ids)]
    for leg, _ in used:
        for doc in _id_list(leg.ids):
            scores.setdefault(doc, 0.0)
    for leg, weight in used:
        normalised = normalise(leg.scores, norm)
        floor = _floor(normalised, norm)
        present: dict[int, float] = {}
        for doc, value in zip(_id_list(leg.ids), normalised.tolist(), strict=True):
            present.setdefault(doc, value)
        for doc in scores:
            scores[doc] += weight * present.get(doc, floor)
    counted = [weight > 0 and len(leg.ids) > 0 for leg, weight in zip(legs, weights, strict=True)]
    return _ordered(scores, {doc: ranks[doc] for doc in scores}, limit, counted)


def fuse(dense: Leg, lexical: Leg, config: FusionConfig, *, limit: int | None = None) -> Fused:
    """The two legs fused as ``config`` says; ``ranks`` in the result are ``(dense rank, lexical rank)``."""
    weights = (config.weight, 1.0 - config.weight)
    if config.method == "rrf":
        # Scaled by 2 so that w = 0.5 is textbook RRF, score for score.
        return reciprocal_rank_fusion([dense.ids, lexical.ids], k=config.rrf_k, limit=limit,
                                      weights=(2 * weights[0], 2 * weights[1]))
    return convex_fusion([dense, lexical], weights=weights, norm=config.norm, limit=limit)
