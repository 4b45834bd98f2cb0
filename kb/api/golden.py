"""REST API v1 for golden sets: questions with expected documents, and evaluation runs.

Editors and owners of the collection and platform admins only; anyone else
gets the 404 a missing collection gets (``selectors.evaluable_collection_get``).
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.services import actor_from_request, signed_in_user
from kb import golden, selectors
from kb.exceptions import InvalidInput
from kb.models import GoldenQuestion


def question_out(question: GoldenQuestion) -> dict[str, Any]:
    return {
        "id": question.pk,
        "question": question.question,
        "expected_documents": sorted(d.pk for d in golden.expected_of(question)),
        "created_at": question.created_at.isoformat(),
    }


class GoldenQuestionsView(APIView):
    class Input(serializers.Serializer):
        question = serializers.CharField(max_length=golden.MAX_QUESTION_CHARS, trim_whitespace=True)
        expected_documents = serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), min_length=1,
            max_length=golden.MAX_EXPECTED,
        )

    def get(self, request: Request, collection_id: str) -> Response:
        collection = selectors.evaluable_collection_get(request.user, collection_id)
        return Response({"results": [question_out(q) for q in golden.golden_questions(collection)]})

    def post(self, request: Request, collection_id: str) -> Response:
        collection = selectors.evaluable_collection_get(request.user, collection_id)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        question = golden.golden_question_create(
            actor=actor_from_request(request), user=signed_in_user(request), collection=collection,
            **data.validated_data,
        )
        return Response(question_out(question), status=status.HTTP_201_CREATED)


class GoldenQuestionView(APIView):
    def delete(self, request: Request, collection_id: str, question_id: str) -> Response:
        collection = selectors.evaluable_collection_get(request.user, collection_id)
        golden.golden_question_delete(actor=actor_from_request(request), collection=collection,
                                      question_id=question_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EvaluationsView(APIView):
    """GET: past runs, newest first, each with its change in nDCG@10; POST: run the golden set now."""

    def get(self, request: Request, collection_id: str) -> Response:
        collection = selectors.evaluable_collection_get(request.user, collection_id)
        return Response({"results": [golden.run_out(run, previous)
                                     for run, previous in golden.runs_with_previous(collection)]})

    def post(self, request: Request, collection_id: str) -> Response:
        collection = selectors.evaluable_collection_get(request.user, collection_id)
        previous = golden.evaluation_runs(collection).first()
        run = golden.golden_evaluate(collection=collection, actor=actor_from_request(request))
        if run is None:
            raise InvalidInput(_("Add golden questions before running an evaluation."))
        return Response(golden.run_out(run, previous), status=status.HTTP_201_CREATED)
