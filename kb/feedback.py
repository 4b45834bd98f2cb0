"""Feedback on answers: thumbs up or down with an optional comment, and its export for golden sets.

Whoever may read a collection may rate an answer given from it.  The question, the answer and the
passages it cited are stored with the rating as a snapshot, read from the server's own records —
the conversation turn the answer was kept as, or the chunks as stored — so what a client sends
decides only which answer is rated and how.  The collection's owners export the feedback as JSON
lines whose ``question`` and ``expected_documents`` are what the golden-set import takes
(``POST /api/v1/collections/<id>/golden``): a thumbs-up answer's cited documents are the
documents a good search should find for its question.  Every rating and export is audited.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _

from access.models import User
from access.services import Actor, audit_record
from kb import conversations, selectors
from kb.exceptions import InvalidInput, NotFound
from kb.models import AnswerFeedback, Chunk, Collection, ConversationTurn

MAX_QUESTION = 4000
MAX_ANSWER = 50_000
MAX_PASSAGES = 50


def _comment(comment: str) -> str:
    comment = comment.strip()
    if len(comment) > AnswerFeedback.MAX_COMMENT:
        raise InvalidInput(
            _("A comment is at most %(n)d characters.") % {"n": AnswerFeedback.MAX_COMMENT}
        )
    return comment


def _record(
    *,
    actor: Actor,
    user: User,
    collection: Collection,
    rating: str,
    comment: str,
    turn: ConversationTurn | None,
    question: str,
    answer: str,
    model: str,
    passages: list[dict[str, Any]],
) -> AnswerFeedback:
    if rating not in AnswerFeedback.Rating.values:
        raise InvalidInput(_("A rating is “up” or “down”."))
    fields = {
        "collection": collection,
        "question": question,
        "answer": answer,
        "model": model[:200],
        "passages": passages,
        "rating": rating,
        "comment": _comment(comment),
    }
    with transaction.atomic():
        if turn is not None:  # rating the same answer again changes the rating
            feedback, _created = AnswerFeedback.objects.update_or_create(
                user=user, turn=turn, defaults=fields
            )
        else:
            feedback = AnswerFeedback.objects.create(user=user, turn=None, **fields)
        audit_record(
            actor=actor,
            action="feedback.create",
            target_type="collection",
            target_id=collection.pk,
            detail={
                "feedback": feedback.pk,
                "rating": rating,
                "turn": turn.pk if turn else None,
                "comment_chars": len(feedback.comment),
                "chunks": [p["chunk_id"] for p in passages],
            },
        )
    return feedback


def feedback_on_turn(
    *, actor: Actor, user: User, turn_id: int, rating: str, comment: str = ""
) -> AnswerFeedback:
    """Rate the answer of one of ``user``'s conversation turns; ``NotFound`` for anyone else's.

    The turn must have been asked of a collection the user may still read, and every document the
    answer cites must still be readable (otherwise the answer is withheld from the user, and so is
    rating it).
    """
    turn = (
        ConversationTurn.objects.filter(pk=turn_id, conversation__user=user)
        .select_related("conversation")
        .first()
    )
    if turn is None or turn.state != ConversationTurn.State.ANSWERED:
        raise NotFound("turn")
    collection_id = turn.collection_id or turn.conversation.collection_id
    if collection_id is None:
        raise InvalidInput(_("Only an answer from a collection can be rated."))
    collection = selectors.collection_get(user, collection_id)
    shown = conversations.turn_out(turn, conversations.readable_of(user, [turn]))
    if shown["withheld"]:
        raise NotFound("turn")
    answer = shown["answer"]
    passages = [_passage(c) for c in answer.get("citations") or [] if isinstance(c, dict)]
    return _record(
        actor=actor,
        user=user,
        collection=collection,
        rating=rating,
        comment=comment,
        turn=turn,
        question=turn.question,
        answer=str(answer.get("answer") or ""),
        model=str(answer.get("model") or answer.get("backend") or ""),
        passages=passages,
    )


def _passage(citation: dict[str, Any]) -> dict[str, Any]:
    return {
        key: citation.get(key) for key in ("number", "chunk_id", "document_id", "title", "text")
    }


def feedback_on_answer(
    *,
    actor: Actor,
    user: User,
    collection_id: int,
    question: str,
    answer: str,
    chunk_ids: Sequence[int],
    rating: str,
    comment: str = "",
    model: str = "",
) -> AnswerFeedback:
    """Rate an answer that was not kept as a conversation turn (``/api/v1/ask``).

    ``chunk_ids``: the passages the answer cited, in the order of their ``[n]`` markers; each must be
    one the user may read in that collection (``NotFound`` otherwise).  Their text is snapshotted
    from the database.
    """
    collection = selectors.collection_get(user, collection_id)
    question, answer = question.strip(), answer.strip()
    if not question:
        raise InvalidInput(_("Say which question the answer was for."))
    if len(question) > MAX_QUESTION or len(answer) > MAX_ANSWER:
        raise InvalidInput(_("The question or the answer is too long."))
    wanted = list(dict.fromkeys(int(c) for c in chunk_ids))
    if len(wanted) > MAX_PASSAGES:
        raise InvalidInput(_("At most %(n)d passages.") % {"n": MAX_PASSAGES})
    chunks = {
        c.pk: c
        for c in Chunk.objects.restrict(user)
        .filter(pk__in=wanted, document__collection=collection)
        .select_related("document")
    }
    if len(chunks) != len(wanted):
        raise NotFound("chunk")
    passages = [
        {
            "number": i + 1,
            "chunk_id": pk,
            "document_id": chunks[pk].document_id,
            "title": chunks[pk].document.title,
            "text": chunks[pk].text,
        }
        for i, pk in enumerate(wanted)
    ]
    return _record(
        actor=actor,
        user=user,
        collection=collection,
        rating=rating,
        comment=comment,
        turn=None,
        question=question,
        answer=answer,
        model=model,
        passages=passages,
    )


def feedback_export(
    *, actor: Actor, collection: Collection, rating: str | None = None
) -> Iterator[dict[str, Any]]:
    """The collection's feedback as export rows, oldest first (the caller checked the user owns it).

    Each row carries ``question`` and ``expected_documents`` (the cited documents, in citation
    order) as the golden-set import takes them, plus the rating, comment, answer, model and
    passages.  Who gave it is left out: the export is for judging answers, not people.
    """
    rows = AnswerFeedback.objects.filter(collection=collection)
    if rating is not None:
        rows = rows.filter(rating=rating)
    audit_record(
        actor=actor,
        action="feedback.export",
        target_type="collection",
        target_id=collection.pk,
        detail={"rating": rating, "rows": rows.count()},
    )
    return (_export_row(feedback) for feedback in rows.iterator())


def _export_row(feedback: AnswerFeedback) -> dict[str, Any]:
    documents = list(
        dict.fromkeys(
            p.get("document_id")
            for p in feedback.passages
            if isinstance(p, dict) and isinstance(p.get("document_id"), int)
        )
    )
    return {
        "question": feedback.question,
        "expected_documents": documents,
        "rating": feedback.rating,
        "comment": feedback.comment,
        "answer": feedback.answer,
        "model": feedback.model,
        "passages": feedback.passages,
        "turn": feedback.turn_id,
        "feedback_id": feedback.pk,
        "created_at": feedback.created_at.isoformat(),
    }
