"""Per-collection fusion tuning from the golden set (``manage.py cairn_tune``).

Each golden question runs once through both legs, inside the owner's read
scope (``search.chunk_legs``); every candidate fusion is then applied to
those stored legs offline, so a grid of ~20 settings costs one search per
question.  Chunk hits fold to documents by best rank and are scored with
nDCG@10, as golden evaluations are.

The choice is made by ``folds``-fold cross-validation so its reported gain
is an estimate on questions it was not chosen on: in each fold the best
setting on the other folds is scored on the held-out one.  The chosen
setting is the best on all questions; it is only recommended (and applied)
when the cross-validated gain over the untuned default is positive —
otherwise the default stays.  Ties prefer the default, then the order of
``candidates()``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from django.utils import timezone

from access.services import Actor, audit_record
from kb import index
from kb.evaluation import ndcg_at
from kb.golden import expected_of, golden_questions
from kb.models import Collection
from kb.retrieval.fusion import FusionConfig, fuse
from kb.search import chunk_legs, fusion_config

# Fewer golden questions than this and a tuned weight is noise: refused.
MIN_GOLDEN_QUESTIONS = 20
DEPTH = 200


class TooFewQuestions(Exception):
    """The golden set is too small to tune on; the message says how many are needed."""


def candidates(default: FusionConfig) -> list[FusionConfig]:
    """The settings searched: the default first, then weighted RRF and convex (min-max, z-score) over weights."""
    grid = [default]
    for weight in (0.3, 0.5, 0.7):
        grid.append(dataclasses.replace(default, method="rrf", weight=weight))
    for norm in ("minmax", "zscore"):
        for weight in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            grid.append(dataclasses.replace(default, method="convex", norm=norm, weight=weight))
    unique: list[FusionConfig] = []
    for config in grid:
        if config not in unique:
            unique.append(config)
    return unique


@dataclass
class TuneResult:
    questions: int
    folds: int
    settings: list[FusionConfig]
    ndcg: list[float]                  # mean nDCG@10 on all questions, per setting
    chosen: FusionConfig               # the default when tuning finds no cross-validated gain
    default: FusionConfig
    cv_tuned: float                    # held-out nDCG@10 of the tuning procedure
    cv_default: float                  # held-out nDCG@10 of the default, same folds
    applied: bool = False
    per_question: list[list[float]] = field(default_factory=list, repr=False)

    @property
    def margin(self) -> float:
        return self.cv_tuned - self.cv_default

    def as_stored(self) -> dict[str, object]:
        return {
            "method": self.chosen.method, "weight": self.chosen.weight, "norm": self.chosen.norm,
            "rrf_k": self.chosen.rrf_k, "ndcg10": round(self.ndcg[self.settings.index(self.chosen)], 4),
            "default_ndcg10": round(self.ndcg[0], 4), "cv_ndcg10": round(self.cv_tuned, 4),
            "cv_default_ndcg10": round(self.cv_default, 4), "questions": self.questions, "folds": self.folds,
            "embedding_model": index.embedding_model_id(), "tuned_at": timezone.now().isoformat(),
        }


def _best(scores: list[list[float]], rows: list[int]) -> int:
    """Index of the setting with the best mean over ``rows`` (the first — the default — on ties)."""
    means = [sum(per_setting[i] for i in rows) for per_setting in scores]
    return max(range(len(means)), key=lambda s: (round(means[s], 9), -s))


def fusion_tune(*, collection: Collection, folds: int = 5) -> TuneResult:
    """Score every candidate fusion on the collection's golden set; raises ``TooFewQuestions``."""
    questions = list(golden_questions(collection))
    if len(questions) < MIN_GOLDEN_QUESTIONS:
        raise TooFewQuestions(
            f"Tuning needs at least {MIN_GOLDEN_QUESTIONS} golden questions; collection {collection.name!r} has "
            f"{len(questions)}. Add {MIN_GOLDEN_QUESTIONS - len(questions)} more.")
    default = fusion_config()
    grid = candidates(default)
    scores: list[list[float]] = [[] for _ in grid]  # scores[setting][question]
    for golden in questions:
        expected = {str(d.pk): 1 for d in expected_of(golden)}
        retrieval, documents = chunk_legs(collection.owner, golden.question, collection_id=collection.pk,
                                          depth=DEPTH)
        for s, config in enumerate(grid):
            ranked: list[str] = []
            for chunk_id, _, _ in fuse(retrieval.dense, retrieval.lexical, config, limit=DEPTH):
                key = str(documents.get(chunk_id, ""))
                if key and key not in ranked:
                    ranked.append(key)
            scores[s].append(ndcg_at(ranked, expected, 10))
    n = len(questions)
    folds = max(2, min(folds, n))
    fold_of = [i % folds for i in range(n)]
    held_tuned = held_default = 0.0
    for fold in range(folds):
        train = [i for i in range(n) if fold_of[i] != fold]
        test = [i for i in range(n) if fold_of[i] == fold]
        pick = _best(scores, train)
        held_tuned += sum(scores[pick][i] for i in test)
        held_default += sum(scores[0][i] for i in test)
    means = [sum(per_setting) / n for per_setting in scores]
    best = _best(scores, list(range(n)))
    cv_tuned, cv_default = held_tuned / n, held_default / n
    chosen = grid[best] if cv_tuned > cv_default else default
    return TuneResult(questions=n, folds=folds, settings=grid, ndcg=means, chosen=chosen, default=default,
                      cv_tuned=cv_tuned, cv_default=cv_default, per_question=scores)


def fusion_apply(*, actor: Actor, collection: Collection, result: TuneResult) -> None:
    """Store the tuned choice on the collection (search and ask use it from the next query); audited."""
    collection.fusion = {} if result.chosen == result.default else result.as_stored()
    collection.save(update_fields=["fusion"])
    result.applied = True
    audit_record(actor=actor, action="kb.fusion.tune", target_type="collection", target_id=collection.pk,
                 detail={"fusion": result.chosen.describe(), "cv_margin": round(result.margin, 4),
                         "questions": result.questions})
