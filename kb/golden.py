"""Golden sets: per-collection retrieval checks that are re-run after a re-index or a model change.

A golden set is a handful of questions, each with the documents a good
search must return.  ``golden_evaluate`` runs every question through
``chunk_search`` — the same permission-scoped path (fusion, optional
reranker) users get, as the collection's owner — folds the chunk hits to
documents by best rank, and stores nDCG@10, Recall@10 and MRR@10 with the
embedding model, reranker and index version that produced them.

Who may manage a golden set: editors and owners of the collection and
platform admins (``selectors.evaluable_collection_get``); everyone else
gets a 404.  Evaluation is synchronous — the set is capped at
``CAIRN_GOLDEN_MAX_QUESTIONS`` — and costs one search per question.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from django.conf import settings
from django.db import transaction
from django.db.models import Prefetch, QuerySet
from django.utils.translation import gettext as _

from access.models import User
from access.services import Actor, audit_record
from kb import index
from kb.evaluation import mrr_at, ndcg_at, recall_at
from kb.exceptions import InvalidInput, NotFound
from kb.models import Collection, Document, EvaluationRun, GoldenQuestion
from kb.search import chunk_search, collection_fusion, default_fusion
from kb.selectors import readable_documents

# Chunks fetched per question; several chunks of one document fold into one rank.
SEARCH_DEPTH = 50
MAX_QUESTION_CHARS = 2000
MAX_EXPECTED = 50


def golden_documents(user: User, collection: Collection) -> QuerySet[Document]:
    """Documents that may be named as expected answers: those the user may read (an admin: the owner's view)."""
    reader = collection.owner if getattr(user, "is_platform_admin", False) else user
    return readable_documents(reader, collection=collection)


def golden_questions(collection: Collection) -> QuerySet[GoldenQuestion]:
    """The collection's golden questions with their expected documents.

    Whoever manages the golden set (``selectors.evaluable_collection_get``)
    sees which documents each question expects — by id, and by title only
    where the page shows what they may read (``golden_documents``).
    """
    expected = Document.objects.unrestricted("the documents a golden question expects, for who manages the set")
    return GoldenQuestion.objects.filter(collection=collection).prefetch_related(
        Prefetch("expected_documents", queryset=expected, to_attr="expected"))


def expected_of(question: GoldenQuestion) -> list[Document]:
    """The documents ``question`` expects, as ``golden_questions`` prefetched them."""
    expected: list[Document] = vars(question)["expected"]
    return expected


def golden_question_create(
    *, actor: Actor, user: User, collection: Collection, question: str, expected_documents: Sequence[int]
) -> GoldenQuestion:
    """Add a question to the collection's golden set; raises ``InvalidInput`` with the reason."""
    question = " ".join(question.split())
    if not question:
        raise InvalidInput(_("The question is empty."))
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidInput(_("The question is longer than %(limit)s characters.") % {"limit": MAX_QUESTION_CHARS})
    wanted = sorted({int(pk) for pk in expected_documents})
    if not wanted:
        raise InvalidInput(_("Name at least one expected document."))
    if len(wanted) > MAX_EXPECTED:
        raise InvalidInput(_("At most %(limit)s expected documents per question.") % {"limit": MAX_EXPECTED})
    found = list(golden_documents(user, collection).filter(pk__in=wanted))
    missing = sorted(set(wanted) - {d.pk for d in found})
    if missing:
        raise InvalidInput(_("These documents are not in this collection: %(ids)s") % {"ids": ", ".join(map(str, missing))})
    with transaction.atomic():
        if GoldenQuestion.objects.filter(collection=collection).count() >= settings.CAIRN_GOLDEN_MAX_QUESTIONS:
            raise InvalidInput(_("A golden set holds at most %(limit)s questions (CAIRN_GOLDEN_MAX_QUESTIONS).")
                               % {"limit": settings.CAIRN_GOLDEN_MAX_QUESTIONS})
        golden = GoldenQuestion.objects.create(collection=collection, question=question, created_by=user)
        golden.expected_documents.add(*found)  # a new question: nothing to replace
        audit_record(actor=actor, action="kb.golden.create", target_type="collection", target_id=collection.pk,
                     detail={"golden_question": golden.pk, "expected_documents": wanted})
    return golden_questions(collection).get(pk=golden.pk)


def golden_question_delete(*, actor: Actor, collection: Collection, question_id: object) -> None:
    try:
        pk = int(str(question_id))
    except ValueError:
        raise NotFound("golden question") from None
    deleted, _details = GoldenQuestion.objects.filter(collection=collection, pk=pk).delete()
    if not deleted:
        raise NotFound("golden question")
    audit_record(actor=actor, action="kb.golden.delete", target_type="collection", target_id=collection.pk,
                 detail={"golden_question": pk})


def evaluation_runs(collection: Collection) -> QuerySet[EvaluationRun]:
    return EvaluationRun.objects.filter(collection=collection)


def golden_evaluate(
    *, collection: Collection, actor: Actor | None = None, trigger: str = EvaluationRun.Trigger.MANUAL,
) -> EvaluationRun | None:
    """Run the golden set through the real search, as the collection's owner; store and return the run.

    Returns None when the collection has no golden questions.
    """
    questions = list(golden_questions(collection)[: settings.CAIRN_GOLDEN_MAX_QUESTIONS])
    if not questions:
        return None
    owner = collection.owner
    started = time.perf_counter()
    snapshot = index.index_reader().snapshot()
    reranker = index.active_reranker()
    details: list[dict[str, object]] = []
    totals = {"ndcg10": 0.0, "recall10": 0.0, "mrr10": 0.0}
    for golden in questions:
        expected = {str(d.pk): 1 for d in expected_of(golden)}
        ranked: list[str] = []
        for hit in chunk_search(owner, golden.question, collection_ids=[collection.pk], k=SEARCH_DEPTH):
            key = str(hit.document_id)
            if key not in ranked:
                ranked.append(key)
        scores = {"ndcg10": ndcg_at(ranked, expected, 10), "recall10": recall_at(ranked, expected, 10),
                  "mrr10": mrr_at(ranked, expected, 10)}
        for name, value in scores.items():
            totals[name] += value
        details.append({
            "question_id": golden.pk, "question": golden.question[:300],
            "ranks": {doc: (ranked.index(doc) + 1 if doc in ranked else None) for doc in sorted(expected, key=int)},
            **{name: round(value, 6) for name, value in scores.items()},
        })
    n = len(questions)
    run = EvaluationRun.objects.create(
        collection=collection, trigger=trigger, started_by=actor.user if actor is not None else None,
        embedding_model=index.embedding_model_id(),
        reranker=reranker.model_id if reranker is not None else "",
        index_version=snapshot.version if snapshot is not None else None,
        fusion=(collection_fusion([collection.pk]) or default_fusion()).describe(),
        questions=n, ndcg10=totals["ndcg10"] / n, recall10=totals["recall10"] / n, mrr10=totals["mrr10"] / n,
        seconds=time.perf_counter() - started, details=details,
    )
    audit_record(actor=actor or Actor(user=None), action="kb.golden.evaluate", target_type="collection",
                 target_id=collection.pk,
                 detail={"run": run.pk, "trigger": trigger, "questions": n, "ndcg10": round(run.ndcg10, 4)})
    return run


def golden_evaluate_all(*, trigger: str = EvaluationRun.Trigger.REINDEX) -> list[EvaluationRun]:
    """Evaluate every live collection that has a golden set (after a full re-index or a model switch)."""
    collections = {
        golden.collection_id: golden.collection
        for golden in GoldenQuestion.objects.filter(collection__deleted_at__isnull=True).select_related("collection__owner")
    }
    runs: list[EvaluationRun] = []
    for _pk, collection in sorted(collections.items()):
        run = golden_evaluate(collection=collection, trigger=trigger)
        if run is not None:
            runs.append(run)
    return runs


def run_out(run: EvaluationRun, previous: EvaluationRun | None = None) -> dict[str, object]:
    """The JSON shape of a run (API and page), with the change since the run before it."""
    return {
        "id": run.pk, "created_at": run.created_at.isoformat(), "trigger": run.trigger,
        "embedding_model": run.embedding_model, "reranker": run.reranker or None,
        "index_version": run.index_version, "fusion": run.fusion or None, "questions": run.questions,
        "ndcg10": round(run.ndcg10, 4), "recall10": round(run.recall10, 4), "mrr10": round(run.mrr10, 4),
        "seconds": round(run.seconds, 3),
        "delta_ndcg10": None if previous is None else round(run.ndcg10 - previous.ndcg10, 4),
        "details": run.details,
    }


def runs_with_previous(collection: Collection, limit: int = 50) -> list[tuple[EvaluationRun, EvaluationRun | None]]:
    runs = list(evaluation_runs(collection)[: limit + 1])
    return [(run, runs[i + 1] if i + 1 < len(runs) else None) for i, run in enumerate(runs[:limit])]
