"""REST API v1 for tuning a collection's fusion from its golden set (``kb.tuning``); owners only.

* ``GET  /collections/<id>/tune`` — the stored choice (and whether it is stale), what search uses now,
  the latest tuning run with its table;
* ``POST /collections/<id>/tune`` — start a tuning run: it runs where background tasks run
  (``CAIRN_TASKS``: a Celery worker, the personal shape's in-process worker, or at once inline),
  so the answer is ``202`` with ``tuning.status`` ``queued`` (poll ``GET``) or already ``done``;
  ``{"apply": true}`` also applies the choice once the run is done;
* ``POST /collections/<id>/tune/apply`` — store the latest finished run's choice on the collection.

Anyone but an owner gets the 404 of a missing collection.  Fewer golden
questions than ``kb.tuning.MIN_GOLDEN_QUESTIONS``: a 400 saying how many are needed.
"""

from __future__ import annotations

from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.services import actor_from_request
from ingestion.api import enqueue_tune
from kb import selectors, tuning
from kb.api.errors import error_body


class TuneView(APIView):
    class Input(serializers.Serializer):
        apply = serializers.BooleanField(default=False)

    def get(self, request: Request, collection_id: str) -> Response:
        collection = selectors.owned_collection_get(request.user, collection_id)
        return Response(tuning.fusion_state(collection))

    def post(self, request: Request, collection_id: str) -> Response:
        collection = selectors.owned_collection_get(request.user, collection_id)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        actor = actor_from_request(request)
        try:
            tuning.tuning_request(actor=actor, collection=collection)
        except tuning.TooFewQuestions as exc:
            return Response(
                error_body(
                    "too_few_questions",
                    str(exc),
                    {"needed": exc.needed, "have": exc.have, "missing": exc.needed - exc.have},
                ),
                status=status.HTTP_400_BAD_REQUEST,
            )
        enqueue_tune(collection.pk)  # inline (tests, command line): it has run when this returns
        collection.refresh_from_db(fields=["fusion", "fusion_tuning"])
        if (
            data.validated_data["apply"]
            and (collection.fusion_tuning or {}).get("status") == "done"
        ):
            tuning.tuning_apply(actor=actor, collection=collection)
        return Response(tuning.fusion_state(collection), status=status.HTTP_202_ACCEPTED)


class TuneApplyView(APIView):
    def post(self, request: Request, collection_id: str) -> Response:
        collection = selectors.owned_collection_get(request.user, collection_id)
        return Response(
            tuning.tuning_apply(actor=actor_from_request(request), collection=collection)
        )
