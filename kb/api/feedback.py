"""REST API v1 for feedback on answers: ``POST /api/v1/feedback`` and the owners' JSONL export."""

from __future__ import annotations

import json

from django.http import StreamingHttpResponse
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.services import actor_from_request, signed_in_user
from kb import feedback, selectors
from kb.models import AnswerFeedback

MAX_ID = 2**63 - 1


def feedback_out(row: AnswerFeedback) -> dict[str, object]:
    return {
        "id": row.pk,
        "collection": row.collection_id,
        "turn": row.turn_id,
        "rating": row.rating,
        "comment": row.comment,
        "created_at": row.created_at.isoformat(),
    }


class FeedbackView(APIView):
    """POST a thumbs up or down on an answer: ``{"turn", "rating", "comment"?}`` for a conversation's answer,
    or ``{"collection", "question", "answer", "chunks", "rating", "comment"?, "model"?}`` for one from
    ``/api/v1/ask``.  The user must be able to read the collection (404 otherwise)."""

    class Input(serializers.Serializer):
        rating = serializers.ChoiceField(choices=AnswerFeedback.Rating.values)
        comment = serializers.CharField(
            required=False, allow_blank=True, max_length=AnswerFeedback.MAX_COMMENT, default=""
        )
        turn = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
        collection = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
        question = serializers.CharField(required=False, max_length=feedback.MAX_QUESTION)
        answer = serializers.CharField(
            required=False, allow_blank=True, max_length=feedback.MAX_ANSWER, default=""
        )
        chunks = serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
            required=False,
            max_length=feedback.MAX_PASSAGES,
            default=list,
        )
        model = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")

        def validate(self, attrs: dict[str, object]) -> dict[str, object]:
            if "turn" not in attrs and not ("collection" in attrs and "question" in attrs):
                raise serializers.ValidationError(
                    "Name the conversation turn rated, or the collection and question of the answer."
                )
            return attrs

    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        user, actor = signed_in_user(request), actor_from_request(request)
        if "turn" in params:
            row = feedback.feedback_on_turn(
                actor=actor,
                user=user,
                turn_id=params["turn"],
                rating=params["rating"],
                comment=params["comment"],
            )
        else:
            row = feedback.feedback_on_answer(
                actor=actor,
                user=user,
                collection_id=params["collection"],
                question=params["question"],
                answer=params["answer"],
                chunk_ids=params["chunks"],
                rating=params["rating"],
                comment=params["comment"],
                model=params["model"],
            )
        return Response(feedback_out(row), status=status.HTTP_201_CREATED)


class FeedbackExportView(APIView):
    """GET the collection's feedback as JSON lines (owners; ``?rating=up`` for the thumbs-up ones only)."""

    class Input(serializers.Serializer):
        rating = serializers.ChoiceField(choices=AnswerFeedback.Rating.values, required=False)

    def get(self, request: Request, collection_id: str) -> StreamingHttpResponse:
        collection = selectors.collection_get(request.user, collection_id, for_owner=True)
        data = self.Input(data=request.query_params)
        data.is_valid(raise_exception=True)
        rows = feedback.feedback_export(
            actor=actor_from_request(request),
            collection=collection,
            rating=data.validated_data.get("rating"),
        )
        response = StreamingHttpResponse(
            (json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
            content_type="application/jsonl; charset=utf-8",
        )
        response["Content-Disposition"] = (
            f'attachment; filename="feedback-collection-{collection.pk}.jsonl"'
        )
        return response
