"""Conversations: a person's questions and answers kept in order, each follow-up understood through the earlier turns.

A conversation belongs to one user and nobody else sees it (404).  Each new
question goes through ``kb.followup.standalone_question`` with the earlier
questions — the same rewriting the OpenAI-compatible endpoint uses — and the
standalone question is what retrieval and the generator get; both are kept
on the turn.  Each turn is audited as an ask (``via: conversation``) by
``kb.answering``; creating, renaming and deleting conversations are audited
here.

Reading a turn back re-checks its citations: a turn that cited a document
the user can no longer read (unshared, deleted, hidden by a new policy)
comes back without the answer text and those passages, saying so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from access.models import User
from access.services import Actor, audit_record
from kb import followup, selectors
from kb.exceptions import InvalidInput, NotFound
from kb.models import Collection, Conversation, ConversationTurn

MAX_CONVERSATIONS_PER_USER = 1000
MAX_TURNS = 200
MAX_TITLE = 200


def conversations_of(user: User) -> Any:
    return Conversation.objects.filter(user=user).select_related("collection")


def conversation_get(user: User, conversation_id: object) -> Conversation:
    """The user's own conversation; anyone else's (or none) is ``NotFound`` → 404."""
    text = str(conversation_id)
    if not text.isdigit() or len(text) > 18:
        raise NotFound("conversation")
    conversation = conversations_of(user).filter(pk=int(text)).first()
    if conversation is None:
        raise NotFound("conversation")
    return conversation


def _title(title: str) -> str:
    title = " ".join(title.split())
    if len(title) > MAX_TITLE:
        raise InvalidInput(_("A title is at most %(limit)s characters.") % {"limit": MAX_TITLE})
    return title


def conversation_create(*, actor: Actor, user: User, collection: Collection | None = None,
                        title: str = "") -> Conversation:
    if Conversation.objects.filter(user=user).count() >= MAX_CONVERSATIONS_PER_USER:
        raise InvalidInput(_("At most %(limit)s conversations; delete some first.") % {"limit": MAX_CONVERSATIONS_PER_USER})
    with transaction.atomic():
        conversation = Conversation.objects.create(user=user, collection=collection, title=_title(title))
        audit_record(actor=actor, action="conversation.create", target_type="conversation",
                     target_id=conversation.pk, detail={"collection": collection.pk if collection else None})
    return conversation


def conversation_rename(*, actor: Actor, conversation: Conversation, title: str) -> Conversation:
    title = _title(title)
    if not title:
        raise InvalidInput(_("A title cannot be empty."))
    with transaction.atomic():
        conversation.title = title
        conversation.save(update_fields=["title"])
        audit_record(actor=actor, action="conversation.rename", target_type="conversation",
                     target_id=conversation.pk, detail={"title": title})
    return conversation


def conversation_delete(*, actor: Actor, conversation: Conversation) -> None:
    with transaction.atomic():
        audit_record(actor=actor, action="conversation.delete", target_type="conversation",
                     target_id=conversation.pk, detail={"turns": conversation.turns.count()})
        conversation.delete()


def standalone_for(conversation: Conversation, question: str) -> str:
    """``question`` rewritten with the conversation's earlier questions it leans on (``kb.followup``)."""
    earlier = list(conversation.turns.order_by("created_at", "id").values_list("question", flat=True))
    if len(earlier) >= MAX_TURNS:
        raise InvalidInput(_("A conversation holds at most %(limit)s questions; start a new one.") % {"limit": MAX_TURNS})
    messages = [{"role": "user", "content": text} for text in earlier] + [{"role": "user", "content": question}]
    try:
        return followup.standalone_question(messages)
    except ValueError:
        raise InvalidInput(_("Ask a question.")) from None


def turn_record(*, conversation: Conversation, question: str, standalone: str, collection_id: int | None,
                answer: dict[str, Any] | None, state: str) -> ConversationTurn:
    with transaction.atomic():
        turn = ConversationTurn.objects.create(
            conversation=conversation, question=question, standalone_question=standalone,
            collection_id=collection_id, answer=answer or {}, state=state)
        changes: dict[str, Any] = {"updated_at": timezone.now()}
        if not conversation.title:
            changes["title"] = _title(question)[:80]
        Conversation.objects.filter(pk=conversation.pk).update(**changes)
    return turn


def _documents_cited(turns: Iterable[ConversationTurn]) -> set[int]:
    ids: set[int] = set()
    for turn in turns:
        for key in ("citations", "passages"):
            for item in turn.answer.get(key) or []:
                if isinstance(item, dict) and isinstance(item.get("document_id"), int):
                    ids.add(item["document_id"])
    return ids


def readable_of(user: User, turns: Iterable[ConversationTurn]) -> set[int]:
    """Which of the documents these turns cite the user may read now."""
    cited = _documents_cited(turns)
    if not cited:
        return set()
    return set(selectors.readable_documents(user).filter(pk__in=cited).values_list("pk", flat=True))


def turn_out(turn: ConversationTurn, readable: set[int]) -> dict[str, Any]:
    answer = dict(turn.answer or {})
    hidden = 0
    for key in ("citations", "passages"):
        items = [item for item in answer.get(key) or [] if isinstance(item, dict)]
        kept = [item for item in items if item.get("document_id") in readable]
        hidden = max(hidden, len(items) - len(kept))
        if key in answer:
            answer[key] = kept
    if hidden:
        answer["answer"] = ""
        answer["reasoning"] = ""
    return {
        "id": turn.pk, "question": turn.question, "standalone_question": turn.standalone_question,
        "collection": turn.collection_id, "state": turn.state, "created_at": turn.created_at.isoformat(),
        "answer": answer, "withheld": hidden,
    }


def conversation_out(conversation: Conversation, *, with_turns: bool = False, user: User | None = None
                     ) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": conversation.pk, "title": conversation.title or "New conversation",
        "collection": conversation.collection_id, "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }
    if with_turns and user is not None:
        turns = list(conversation.turns.order_by("created_at", "id"))
        readable = readable_of(user, turns)
        body["turns"] = [turn_out(turn, readable) for turn in turns]
    return body
