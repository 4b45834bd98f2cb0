"""REST API v1 for conversations: ``/api/v1/conversations`` and their messages.

``POST …/conversations/<id>/messages {"question", "collection"?, "stream"?}``
answers like ``/api/v1/ask`` (the same retrieval, permission check,
generation pool, refusals and audit) from the question rewritten with the
conversation's earlier questions, and adds ``standalone_question`` and
``turn``.  Streamed, the ``start`` event carries both and the turn is kept
when the stream ends (``stopped`` if the client went away first).
"""

from __future__ import annotations

from django.http import StreamingHttpResponse
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.services import actor_from_request, signed_in_user
from kb import answering, conversations, selectors
from kb.api import ask_stream
from kb.api.answers import answer_out, refusal_response
from kb.models import ConversationTurn


class ConversationsView(APIView):
    """GET your conversations, most recent first; POST ``{"collection"?, "title"?}`` starts one."""

    class Input(serializers.Serializer):
        collection = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**63 - 1)
        title = serializers.CharField(required=False, allow_blank=True, max_length=conversations.MAX_TITLE,
                                      default="")

    def get(self, request: Request) -> Response:
        user = signed_in_user(request)
        rows = conversations.conversations_of(user)[:500]
        return Response({"results": [conversations.conversation_out(c) for c in rows]})

    def post(self, request: Request) -> Response:
        user = signed_in_user(request)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        collection_id = data.validated_data.get("collection")
        collection = selectors.collection_get(request.user, collection_id) if collection_id else None
        conversation = conversations.conversation_create(actor=actor_from_request(request), user=user,
                                                         collection=collection,
                                                         title=data.validated_data["title"])
        return Response(conversations.conversation_out(conversation, with_turns=True, user=user),
                        status=status.HTTP_201_CREATED)


class ConversationView(APIView):
    """GET one with its turns; PATCH ``{"title"}`` renames; DELETE removes it."""

    class Input(serializers.Serializer):
        title = serializers.CharField(max_length=conversations.MAX_TITLE)

    def get(self, request: Request, conversation_id: str) -> Response:
        user = signed_in_user(request)
        conversation = conversations.conversation_get(user, conversation_id)
        return Response(conversations.conversation_out(conversation, with_turns=True, user=user))

    def patch(self, request: Request, conversation_id: str) -> Response:
        user = signed_in_user(request)
        conversation = conversations.conversation_get(user, conversation_id)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        conversations.conversation_rename(actor=actor_from_request(request), conversation=conversation,
                                          title=data.validated_data["title"])
        return Response(conversations.conversation_out(conversation))

    def delete(self, request: Request, conversation_id: str) -> Response:
        conversation = conversations.conversation_get(signed_in_user(request), conversation_id)
        conversations.conversation_delete(actor=actor_from_request(request), conversation=conversation)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ConversationMessagesView(ask_stream.AskingView):
    """POST a question to a conversation; answered as ``/api/v1/ask`` answers, from the standalone question."""

    class Input(serializers.Serializer):
        question = serializers.CharField(max_length=4000, trim_whitespace=True)
        collection = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**63 - 1)
        stream = serializers.BooleanField(required=False, default=False)
        max_new_tokens = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)

    def post(self, request: Request, conversation_id: str) -> Response | StreamingHttpResponse:
        user = signed_in_user(request)
        conversation = conversations.conversation_get(user, conversation_id)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        collection_id = params.get("collection") or conversation.collection_id
        collection_ids = [selectors.collection_get(request.user, collection_id).pk] if collection_id else None
        question = params["question"]
        standalone = conversations.standalone_for(conversation, question)
        actor, limit = actor_from_request(request), params.get("max_new_tokens")
        wants_stream = params["stream"] or "text/event-stream" in request.headers.get("Accept", "")
        scope_id = collection_ids[0] if collection_ids else None
        try:
            if wants_stream:
                asking = answering.ask_stream(user=user, actor=actor, question=standalone,
                                              collection_ids=collection_ids, max_new_tokens=limit,
                                              via="conversation")
                framer = ask_stream.EventFramer(asking.generation, asking.passages,
                                                start_extra={"standalone_question": standalone,
                                                             "conversation": conversation.pk})

                def keep() -> None:
                    state = (ConversationTurn.State.ANSWERED if framer.final is not None
                             else ConversationTurn.State.FAILED if framer.error is not None
                             else ConversationTurn.State.STOPPED)
                    conversations.turn_record(conversation=conversation, question=question, standalone=standalone,
                                              collection_id=scope_id, answer=framer.final or framer.error,
                                              state=state)

                if asking.generation is None:  # nothing relevant found: the fixed answer, no generation
                    return ask_stream.no_good_match_response(framer, on_close=keep)
                return ask_stream.event_stream_response(request._request, asking.generation, asking.passages,
                                                        framer=framer, on_close=keep)
            result = answering.answer_question(user=user, actor=actor, question=standalone,
                                               collection_ids=collection_ids, max_new_tokens=limit,
                                               via="conversation")
        except Exception as exc:
            refused = refusal_response(exc)
            if refused is None:
                raise
            return refused
        body = answer_out(result.answer, result.passages, no_good_match=result.no_good_match)
        turn = conversations.turn_record(conversation=conversation, question=question, standalone=standalone,
                                         collection_id=scope_id, answer=body,
                                         state=ConversationTurn.State.ANSWERED)
        return Response({**body, "standalone_question": standalone, "turn": turn.pk,
                         "conversation": conversation.pk})
