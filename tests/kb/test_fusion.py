"""Fusion of the dense and lexical legs (kb/retrieval/fusion.py), against hand-computed fusions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kb.retrieval.fusion import (
    FusionConfig,
    Leg,
    convex_fusion,
    fuse,
    normalise,
    reciprocal_rank_fusion,
)


def leg(ids: list[int], scores: list[float]) -> Leg:
    return Leg(np.array(ids, np.int64), np.array(scores, np.float32))


DENSE = leg([1, 2, 3], [0.9, 0.5, 0.1])
LEXICAL = leg([3, 4], [10.0, 4.0])


def order(fused: list[tuple[int, float, tuple[int | None, ...]]]) -> list[int]:
    return [doc for doc, _, _ in fused]


def scores(fused: list[tuple[int, float, tuple[int | None, ...]]]) -> dict[int, float]:
    return {doc: score for doc, score, _ in fused}


# ------------------------------------------------------------------ RRF


def test_equal_weight_rrf_is_textbook_rrf():
    fused = fuse(leg([1, 2], [0.9, 0.8]), leg([2, 3], [5.0, 4.0]), FusionConfig(method="rrf", weight=0.5, rrf_k=60))
    assert order(fused) == [2, 1, 3]
    assert scores(fused) == pytest.approx({1: 1 / 61, 2: 1 / 62 + 1 / 61, 3: 1 / 62})
    assert dict((d, r) for d, _, r in fused) == {1: (1, None), 2: (2, 1), 3: (None, 2)}


def test_weighted_rrf_scales_each_leg_by_its_share():
    # dense share 0.25: dense weight 2·0.25 = 0.5, lexical 2·0.75 = 1.5.
    fused = fuse(leg([1, 2], [0.9, 0.8]), leg([2, 3], [5.0, 4.0]), FusionConfig(method="rrf", weight=0.25, rrf_k=60))
    assert scores(fused) == pytest.approx({1: 0.5 / 61, 2: 0.5 / 62 + 1.5 / 61, 3: 1.5 / 62})
    assert order(fused) == [2, 3, 1]


def test_rrf_limit_keeps_the_best():
    fused = reciprocal_rank_fusion([np.array([1, 2, 3]), np.array([3, 2, 4])], k=60, limit=2)
    assert len(fused) == 2 and set(order(fused)) == {2, 3}


# --------------------------------------------------------------- convex


def test_minmax_normalises_each_leg_to_the_unit_interval():
    assert normalise(np.array([0.9, 0.5, 0.1]), "minmax").tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert normalise(np.array([3.0]), "minmax").tolist() == [1.0]  # a lone candidate is that leg's best
    assert normalise(np.array([2.0, 2.0]), "minmax").tolist() == [1.0, 1.0]


def test_zscore_centres_and_scales_each_leg():
    z = normalise(np.array([10.0, 4.0]), "zscore")
    assert z.tolist() == pytest.approx([1.0, -1.0])
    assert normalise(np.array([2.0, 2.0]), "zscore").tolist() == [0.0, 0.0]


def test_convex_minmax_hand_computed():
    # dense N = [1, .5, 0] for 1, 2, 3; lexical N = [1, 0] for 3, 4; a missing doc gets the leg's floor (0).
    fused = fuse(DENSE, LEXICAL, FusionConfig(method="convex", norm="minmax", weight=0.7))
    assert scores(fused) == pytest.approx({1: 0.7, 2: 0.35, 3: 0.3, 4: 0.0})
    assert order(fused) == [1, 2, 3, 4]


def test_convex_ties_break_on_best_rank_then_id():
    # w = 0.5: doc 1 (dense #1) and doc 3 (lexical #1) both score 0.5; both have best rank 1 → smaller id first.
    fused = fuse(DENSE, LEXICAL, FusionConfig(method="convex", norm="minmax", weight=0.5))
    assert scores(fused) == pytest.approx({1: 0.5, 2: 0.25, 3: 0.5, 4: 0.0})
    assert order(fused) == [1, 3, 2, 4]
    # A tie between a leg's #1 and another leg's #2 goes to the #1, whatever the ids.
    tie = convex_fusion([leg([9, 5], [1.0, 0.0]), leg([5, 9], [1.0, 0.0])], weights=[0.5, 0.5])
    assert scores(tie)[9] == scores(tie)[5] and order(tie) == [5, 9]


def test_convex_zscore_hand_computed():
    fused = fuse(DENSE, LEXICAL, FusionConfig(method="convex", norm="zscore", weight=0.5))
    z = math.sqrt(1.5)  # (0.9 - 0.5) / std([0.9, 0.5, 0.1])
    assert scores(fused) == pytest.approx({1: 0.5 * z - 0.5, 2: -0.5, 3: -0.5 * z + 0.5, 4: -0.5 * z - 0.5},
                                          abs=1e-6)
    assert order(fused) == [1, 3, 2, 4]


def test_a_document_in_one_leg_only_gets_the_other_legs_floor():
    fused = convex_fusion([leg([1, 2], [0.8, 0.2]), leg([3, 1], [7.0, 1.0])], weights=[0.5, 0.5])
    # 1: .5·1 + .5·0 ; 2: .5·0 + .5·0 (missing lexically) ; 3: .5·0 (missing densely) + .5·1
    assert scores(fused) == pytest.approx({1: 0.5, 2: 0.0, 3: 0.5})
    assert dict((d, r) for d, _, r in fused)[3] == (None, 1)


# ---------------------------------------------------- edges and properties


@pytest.mark.parametrize("method", ["rrf", "convex"])
@pytest.mark.parametrize("norm", ["minmax", "zscore"])
def test_empty_legs(method, norm):
    config = FusionConfig(method=method, norm=norm, weight=0.5)
    assert fuse(Leg.empty(), Leg.empty(), config) == []
    assert order(fuse(Leg.empty(), LEXICAL, config)) == [3, 4]
    assert order(fuse(DENSE, Leg.empty(), config)) == [1, 2, 3]


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="method"):
        FusionConfig(method="sum")
    with pytest.raises(ValueError, match="normalisation"):
        FusionConfig(norm="l2")
    with pytest.raises(ValueError, match="weight"):
        FusionConfig(weight=1.5)


@st.composite
def legs(draw: st.DrawFn) -> tuple[Leg, Leg]:
    def one() -> Leg:
        ids = draw(st.lists(st.integers(0, 40), unique=True, max_size=15))
        values = sorted(draw(st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=len(ids),
                                      max_size=len(ids))), reverse=True)
        return leg(ids, values)
    return one(), one()


@settings(max_examples=200, deadline=None)
@given(legs(), st.sampled_from(["rrf", "convex-minmax", "convex-zscore"]))
def test_weight_one_is_the_dense_leg_and_weight_zero_the_lexical_leg(pair, name):
    dense, lexical = pair
    method, _, norm = name.partition("-")
    only_dense = fuse(dense, lexical, FusionConfig(method=method, norm=norm or "minmax", weight=1.0))
    only_lexical = fuse(dense, lexical, FusionConfig(method=method, norm=norm or "minmax", weight=0.0))
    assert order(only_dense) == dense.ids.tolist()
    assert order(only_lexical) == lexical.ids.tolist()


@settings(max_examples=200, deadline=None)
@given(legs(), st.floats(0, 1), st.sampled_from(["rrf", "convex-minmax", "convex-zscore"]))
def test_fusion_returns_each_candidate_once_best_first(pair, weight, name):
    dense, lexical = pair
    method, _, norm = name.partition("-")
    fused = fuse(dense, lexical, FusionConfig(method=method, norm=norm or "minmax", weight=weight))
    expected = set(dense.ids.tolist()) | set(lexical.ids.tolist())
    if 0 < weight < 1:
        assert sorted(order(fused)) == sorted(expected)
    values = [score for _, score, _ in fused]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("norm", ["minmax", "zscore"])
def test_a_lone_candidate_scores_above_what_its_leg_did_not_return(norm):
    # The lexical leg found only doc 7; doc 8, missing from it, gets less from that leg than 7 does.
    fused = fuse(leg([8, 7], [0.9, 0.8]), leg([7], [3.0]), FusionConfig(method="convex", norm=norm, weight=0.0))
    assert order(fused) == [7]
    both = scores(fuse(leg([8, 7], [0.9, 0.8]), leg([7], [3.0]), FusionConfig(method="convex", norm=norm)))
    # minmax: 8 = .5·1 + .5·0, 7 = .5·0 + .5·1 (a tie, broken by best rank then id); zscore: 8 = .5·1 − .5·1, 7 = −.5 + 0
    assert both == pytest.approx({8: 0.5, 7: 0.5} if norm == "minmax" else {8: 0.0, 7: -0.5})
