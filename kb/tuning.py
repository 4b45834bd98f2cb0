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
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from access.services import Actor, audit_record
from kb import index
from kb.evaluation import ndcg_at
from kb.exceptions import InvalidInput
from kb.golden import expected_of, golden_questions
from kb.models import Collection
from kb.retrieval.fusion import FusionConfig, Leg, fuse
from kb.search import chunk_legs, default_fusion, fusion_from_dict

log = logging.getLogger(__name__)

# Fewer golden questions than this and a tuned weight is noise: refused.
MIN_GOLDEN_QUESTIONS = 20
DEPTH = 200
# A tuning run that has been "queued" or "running" this long lost its worker: another may start.
STUCK_AFTER = timedelta(hours=1)


class TooFewQuestions(InvalidInput):
    """The golden set is too small to tune on; the message says how many are needed."""

    def __init__(self, message: str, *, have: int, needed: int) -> None:
        super().__init__(message)
        self.have = have
        self.needed = needed


DEPTHS = (50, 200)  # leg depths tried besides the default's, for the three middle-weight settings


def candidates(default: FusionConfig) -> list[FusionConfig]:
    """The settings searched: the default first, then weighted RRF and convex (min-max, z-score) over weights.

    At the default leg depth, then — for the default, RRF w=0.5 and convex z-score w=0.5 — at each of
    ``DEPTHS`` candidates per leg (capped at ``DEPTH``, the depth the legs are fetched at).
    """
    grid = [default]
    plain = dataclasses.replace(default, checked=False)  # the others are settings of their own, not leg-checked
    for weight in (0.3, 0.5, 0.7):
        grid.append(dataclasses.replace(plain, method="rrf", weight=weight))
    for norm in ("minmax", "zscore"):
        for weight in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            grid.append(dataclasses.replace(plain, method="convex", norm=norm, weight=weight))
    for base in (default, dataclasses.replace(plain, method="rrf", weight=0.5),
                 dataclasses.replace(plain, method="convex", norm="zscore", weight=0.5)):
        for depth in DEPTHS:
            grid.append(dataclasses.replace(base, dense_depth=min(depth, DEPTH), lexical_depth=min(depth, DEPTH)))
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
            "rrf_k": self.chosen.rrf_k, "depth": self.chosen.dense_depth, "ndcg10": round(self.ndcg[self.settings.index(self.chosen)], 4),
            "default_ndcg10": round(self.ndcg[0], 4), "cv_ndcg10": round(self.cv_tuned, 4),
            "cv_default_ndcg10": round(self.cv_default, 4), "questions": self.questions, "folds": self.folds,
            "embedding_model": index.embedding_model_id(), "tuned_at": timezone.now().isoformat(),
        }


    def as_table(self) -> dict[str, Any]:
        """The JSON shape of a run (API, page, ``cairn_tune --json``): one row per setting, the choice, margins."""
        default_ndcg = self.ndcg[self.settings.index(self.default)]
        return {
            "questions": self.questions, "folds": self.folds,
            "default": self.default.describe(), "chosen": self.chosen.describe(),
            "cv_tuned_ndcg10": round(self.cv_tuned, 4), "cv_default_ndcg10": round(self.cv_default, 4),
            "cv_margin": round(self.margin, 4),
            "table": [
                {"setting": config.describe(), "method": config.method, "weight": config.weight,
                 "norm": config.norm, "rrf_k": config.rrf_k, "depth": config.dense_depth, "ndcg10": round(ndcg, 4),
                 "margin_over_default": round(ndcg - default_ndcg, 4), "default": config == self.default,
                 "chosen": config == self.chosen}
                for config, ndcg in zip(self.settings, self.ndcg, strict=True)
            ],
            "stored": self.as_stored(),
        }


def _require_enough(collection: Collection, have: int) -> None:
    if have < MIN_GOLDEN_QUESTIONS:
        raise TooFewQuestions(
            _("Tuning needs at least %(needed)d golden questions; collection %(name)s has %(have)d. "
              "Add %(missing)d more.") % {"needed": MIN_GOLDEN_QUESTIONS, "name": repr(collection.name),
                                         "have": have, "missing": MIN_GOLDEN_QUESTIONS - have},
            have=have, needed=MIN_GOLDEN_QUESTIONS)


def _truncated(leg: Leg, depth: int) -> Leg:
    """A leg as a search asking for ``depth`` candidates would have returned it (legs are best first)."""
    return leg if len(leg.ids) <= depth else Leg(leg.ids[:depth], leg.scores[:depth])


def _best(scores: list[list[float]], rows: list[int]) -> int:
    """Index of the setting with the best mean over ``rows`` (the first — the default — on ties)."""
    means = [sum(per_setting[i] for i in rows) for per_setting in scores]
    return max(range(len(means)), key=lambda s: (round(means[s], 9), -s))


def fusion_tune(*, collection: Collection, folds: int = 5) -> TuneResult:
    """Score every candidate fusion on the collection's golden set; raises ``TooFewQuestions``."""
    questions = list(golden_questions(collection))
    _require_enough(collection, len(questions))
    default = default_fusion()
    grid = candidates(default)
    scores: list[list[float]] = [[] for _ in grid]  # scores[setting][question]
    for golden in questions:
        expected = {str(d.pk): 1 for d in expected_of(golden)}
        retrieval, documents = chunk_legs(collection.owner, golden.question, collection_id=collection.pk,
                                          depth=DEPTH)
        for s, config in enumerate(grid):
            ranked: list[str] = []
            dense, lexical = _truncated(retrieval.dense, config.dense_depth), _truncated(retrieval.lexical,
                                                                                       config.lexical_depth)
            for chunk_id, _score, _ranks in fuse(dense, lexical, config, limit=DEPTH):
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
    _store_choice(actor=actor, collection=collection, stored=None if result.chosen == result.default
                  else result.as_stored(), margin=result.margin, questions=result.questions,
                  described=result.chosen.describe())
    result.applied = True


def _store_choice(*, actor: Actor, collection: Collection, stored: dict[str, Any] | None, margin: float,
                  questions: int, described: str) -> None:
    collection.fusion = stored or {}
    collection.save(update_fields=["fusion"])
    audit_record(actor=actor, action="kb.fusion.tune", target_type="collection", target_id=collection.pk,
                 detail={"fusion": described, "cv_margin": round(margin, 4), "questions": questions})


# --- owners tuning from the API and the page: a background run, its status, applying its choice ---------


def tuning_request(*, actor: Actor, collection: Collection) -> dict[str, Any]:
    """Record a queued tuning run of ``collection`` (the caller dispatches ``tuning_run`` after commit).

    Refused (``TooFewQuestions``, a 400 with the count needed) below
    ``MIN_GOLDEN_QUESTIONS``, and (``InvalidInput``) while another run of the
    same collection is queued or running.
    """
    with transaction.atomic():
        locked = Collection.objects.select_for_update().get(pk=collection.pk)
        _require_enough(locked, golden_questions(locked).count())
        current = locked.fusion_tuning or {}
        if current.get("status") in ("queued", "running") and not _stuck(current):
            raise InvalidInput(_("A tuning run of this collection is already in progress."))
        locked.fusion_tuning = {"status": "queued", "requested_at": timezone.now().isoformat(),
                                "requested_by": actor.user.pk if actor.user is not None else None}
        locked.save(update_fields=["fusion_tuning"])
    audit_record(actor=actor, action="kb.fusion.tune_request", target_type="collection", target_id=collection.pk)
    collection.fusion_tuning = locked.fusion_tuning
    return locked.fusion_tuning


def _stuck(state: dict[str, Any]) -> bool:
    try:
        since = datetime.fromisoformat(str(state.get("started_at") or state.get("requested_at")))
    except ValueError:
        return True
    return timezone.now() - since > STUCK_AFTER


def _set_state(collection_id: int, state: dict[str, Any]) -> None:
    Collection.objects.filter(pk=collection_id).update(fusion_tuning=state)


def tuning_run(collection_id: int) -> str:
    """The background task: run a queued tuning and store its table (or its error) on the collection."""
    collection = Collection.objects.select_related("owner").filter(pk=collection_id,
                                                                   deleted_at__isnull=True).first()
    if collection is None or (collection.fusion_tuning or {}).get("status") != "queued":
        return "skipped"
    state = {**collection.fusion_tuning, "status": "running", "started_at": timezone.now().isoformat()}
    # The claim: only one delivery of the task moves "queued" to "running".
    if not Collection.objects.filter(pk=collection.pk, fusion_tuning__status="queued").update(fusion_tuning=state):
        return "skipped"
    try:
        result = fusion_tune(collection=collection)
    except InvalidInput as exc:  # the golden set shrank below the minimum since the request
        _set_state(collection.pk, {**state, "status": "failed", "error": str(exc),
                                   "finished_at": timezone.now().isoformat()})
        return "failed"
    except Exception:
        log.exception("fusion tuning of collection %s failed", collection.pk)
        _set_state(collection.pk, {**state, "status": "failed", "error": _("Tuning failed; see the server log."),
                                   "finished_at": timezone.now().isoformat()})
        return "failed"
    _set_state(collection.pk, {**state, "status": "done", "finished_at": timezone.now().isoformat(),
                               "result": result.as_table()})
    log.info("fusion tuning of collection %s: %s (held-out margin %+.4f)", collection.pk,
             result.chosen.describe(), result.margin)
    return "done"


def tuning_apply(*, actor: Actor, collection: Collection) -> dict[str, Any]:
    """Store the choice of the collection's latest finished tuning run; refused when there is none or it is stale."""
    state = collection.fusion_tuning or {}
    result = state.get("result")
    if state.get("status") != "done" or not isinstance(result, dict):
        raise InvalidInput(_("Run the tuning first: there is no finished tuning run to apply."))
    if state.get("stale") or result.get("stored", {}).get("embedding_model") != index.embedding_model_id():
        raise InvalidInput(_("This tuning run predates a re-index or model switch: run the tuning again."))
    chosen_is_default = result["chosen"] == result["default"]
    _store_choice(actor=actor, collection=collection, stored=None if chosen_is_default else result["stored"],
                  margin=float(result["cv_margin"]), questions=int(result["questions"]),
                  described=str(result["chosen"]))
    _set_state(collection.pk, {**state, "applied_at": timezone.now().isoformat()})
    collection.refresh_from_db(fields=["fusion", "fusion_tuning"])
    return fusion_state(collection)


def stale_reason(collection: Collection) -> str | None:
    """Why the collection's stored choice no longer applies (search then uses the default), or None."""
    stored = collection.fusion or {}
    if not stored:
        return None
    if stored.get("stale"):
        return str(stored["stale"].get("reason", "reindex"))
    if stored.get("embedding_model") and stored["embedding_model"] != index.embedding_model_id():
        return "model_switch"
    return None


def fusion_state(collection: Collection) -> dict[str, Any]:
    """What ``GET …/tune`` answers: the stored choice, whether it is stale, what search uses, the latest run."""
    stored = collection.fusion or {}
    reason = stale_reason(collection)
    active = fusion_from_dict(stored) if stored and reason is None else None
    return {
        "default": default_fusion().describe(),
        "stored": stored or None,
        "stale": reason is not None, "stale_reason": reason,
        "in_use": (active or default_fusion()).describe(),
        "min_questions": MIN_GOLDEN_QUESTIONS,
        "golden_questions": golden_questions(collection).count(),
        "tuning": collection.fusion_tuning or None,
    }


def fusion_mark_stale(reason: str) -> int:
    """Mark every stored choice and finished tuning run stale after a full re-index or a model switch.

    Search and ask then use the settings' default for those collections
    (``search.collection_fusion``) until an owner re-runs the tuning and
    applies it.  Returns how many collections had a choice to mark.
    """
    marked = 0
    at = timezone.now().isoformat()
    for collection in Collection.objects.filter(deleted_at__isnull=True).only("pk", "fusion", "fusion_tuning"):
        updates: dict[str, Any] = {}
        if collection.fusion:
            updates["fusion"] = {**collection.fusion, "stale": {"reason": reason, "at": at}}
            marked += 1
        if (collection.fusion_tuning or {}).get("status") == "done":
            updates["fusion_tuning"] = {**collection.fusion_tuning, "stale": {"reason": reason, "at": at}}
        if updates:
            Collection.objects.filter(pk=collection.pk).update(**updates)
    if marked:
        log.info("fusion choices of %d collections marked stale (%s): search uses the default until re-tuned",
                 marked, reason)
    return marked
