"""REST API v1: one view per operation; input validated at the edge, work done by services."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import FileResponse, StreamingHttpResponse
from django.utils.translation import gettext as _
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.services import actor_from_request, signed_in_user
from ingestion import api as ingestion
from kb import answering, search, selectors, services
from kb.api import ask_stream
from kb.api.answers import answer_out, refusal_response
from kb.api.errors import error_body
from kb.exceptions import InvalidInput
from kb.metrics import ASK_LATENCY, timed
from kb.models import Collection, Document
from kb.processing_messages import processing_message
from kb.retrieval.highlight import highlight_spans, highlight_terms
from kb.storage import UploadTooLarge, blob_path

SEARCH_MODES = ("hybrid", "dense", "lexical")


def collection_out(collection: Collection) -> dict[str, Any]:
    return {
        "id": collection.pk,
        "name": collection.name,
        "description": collection.description,
        "created_at": collection.created_at.isoformat(),
    }


def document_out(document: Document) -> dict[str, Any]:
    latest = document.latest_version
    job = getattr(latest, "job", None) if latest is not None else None
    current = document.current_version
    return {
        "id": document.pk,
        "collection": document.collection_id,
        "title": document.title,
        "status": job.status if job else "PENDING",
        # Stored in English; shown in the reader's language (kb/processing_messages.py).
        "error": processing_message(job.error) if job else "",
        "detail": processing_message(job.detail) if job else "",
        "progress": round(job.progress, 3) if job else 0.0,
        "attempts": job.attempts if job else 0,
        "version": latest.number if latest else None,
        "searchable_version": current.number if current else None,
        "kind": latest.kind if latest else "",
        "size": latest.size if latest else 0,
        "pages": latest.page_count if latest else None,
        "chunks": current.chunk_count if current else 0,
        "sha256": latest.sha256 if latest else "",
        "created_at": document.created_at.isoformat(),
    }


class CollectionsView(APIView):
    class Input(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")

    def get(self, request: Request) -> Response:
        collections = selectors.readable_collections(request.user)
        return Response({"results": [collection_out(c) for c in collections]})

    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        collection = services.collection_create(
            actor=actor_from_request(request), owner=signed_in_user(request), **data.validated_data
        )
        return Response(collection_out(collection), status=status.HTTP_201_CREATED)


class CollectionView(APIView):
    class Input(serializers.Serializer):
        name = serializers.CharField(max_length=200, required=False)
        description = serializers.CharField(max_length=5000, required=False, allow_blank=True)

    def get(self, request: Request, collection_id: str) -> Response:
        return Response(collection_out(selectors.collection_get(request.user, collection_id)))

    def patch(self, request: Request, collection_id: str) -> Response:
        # Renaming is the owner's call, as deleting is.
        collection = selectors.collection_get(request.user, collection_id, for_owner=True)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        services.collection_update(actor=actor_from_request(request), collection=collection, **data.validated_data)
        return Response(collection_out(collection))

    def delete(self, request: Request, collection_id: str) -> Response:
        # Deleting the whole collection is the owner's call; editors delete documents.
        collection = selectors.collection_get(request.user, collection_id, for_owner=True)
        ingestion.collection_delete(actor=actor_from_request(request), collection=collection)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _upload_file(request: Request) -> Any:
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > settings.CAIRN_MAX_UPLOAD_BYTES + 1024 * 1024:
        raise UploadTooLarge(settings.CAIRN_MAX_UPLOAD_BYTES)
    upload = request.FILES.get("file")
    if upload is None:
        raise InvalidInput(_("Send the document as a multipart form field named 'file'."))
    if upload.size > settings.CAIRN_MAX_UPLOAD_BYTES:
        raise UploadTooLarge(settings.CAIRN_MAX_UPLOAD_BYTES)
    return upload


def uploaded(request: Request, result: ingestion.UploadResult) -> Response:
    """The answer to an upload (a new document, version or restore): 201, or 200 with ``duplicate`` for known bytes."""
    body = document_out(selectors.document_get_managed(request.user, result.document.pk))
    body["duplicate"] = result.duplicate
    return Response(body, status=status.HTTP_200_OK if result.duplicate else status.HTTP_201_CREATED)


class CollectionDocumentsView(APIView):
    def get(self, request: Request, collection_id: str) -> Response:
        collection = selectors.collection_get(request.user, collection_id)
        documents = selectors.readable_documents(request.user, collection=collection)
        return Response({"results": [document_out(d) for d in documents]})

    def post(self, request: Request, collection_id: str) -> Response:
        collection = selectors.collection_get(request.user, collection_id, for_edit=True)
        upload = _upload_file(request)
        result = ingestion.document_upload(
            actor=actor_from_request(request), collection=collection,
            filename=upload.name or "untitled", chunks=upload.chunks(),
        )
        return uploaded(request, result)


class DocumentView(APIView):
    def get(self, request: Request, document_id: str) -> Response:
        return Response(document_out(selectors.document_get(request.user, document_id)))

    def delete(self, request: Request, document_id: str) -> Response:
        document = selectors.document_get(request.user, document_id, for_edit=True)
        ingestion.document_delete(actor=actor_from_request(request), document=document)
        return Response(status=status.HTTP_204_NO_CONTENT)


def version_out(version: Any, current_id: int | None) -> dict[str, Any]:
    job = getattr(version, "job", None)
    return {
        "number": version.number, "size": version.size, "kind": version.kind,
        "original_name": version.original_name, "created_at": version.created_at.isoformat(),
        "created_by": version.created_by.get_username(), "status": job.status if job else "PENDING",
        "searchable": version.pk == current_id, "bytes_kept": version.purged_at is None,
    }


class DocumentVersionsView(APIView):
    """GET the document's versions, newest first; POST a changed file as a new version (editors)."""

    def get(self, request: Request, document_id: str) -> Response:
        document = selectors.document_get(request.user, document_id)
        versions = (document.versions.restrict(request.user).select_related("job", "created_by")
                    .order_by("-number")[:200])
        return Response({"results": [version_out(v, document.current_version_id) for v in versions]})

    def post(self, request: Request, document_id: str) -> Response:
        document = selectors.document_get(request.user, document_id, for_edit=True)
        upload = _upload_file(request)
        result = ingestion.document_upload(
            actor=actor_from_request(request), collection=document.collection,
            filename=upload.name or document.title, chunks=upload.chunks(), replace=document,
        )
        return uploaded(request, result)


class DocumentVersionRestoreView(APIView):
    """POST: version ``number``'s bytes become the document's newest version (editors); processed like an upload."""

    def post(self, request: Request, document_id: str, number: str) -> Response:
        document = selectors.document_get(request.user, document_id, for_edit=True)
        version = (document.versions.restrict(request.user).filter(number=int(number)).first()
                   if number.isdigit() and len(number) < 10 else None)
        if version is None:
            raise selectors.NotFound("version")
        if version.purged_at is not None or not blob_path(version.sha256).exists():
            return Response(error_body("gone", f"The file of version {version.number} is no longer kept."),
                            status=status.HTTP_409_CONFLICT)
        with open(blob_path(version.sha256), "rb") as stored:
            result = ingestion.document_upload(
                actor=actor_from_request(request), collection=document.collection,
                filename=version.original_name or document.title, chunks=iter(lambda: stored.read(1 << 20), b""),
                replace=document, restore=True,
            )
        return uploaded(request, result)


class DocumentReprocessView(APIView):
    def post(self, request: Request, document_id: str) -> Response:
        document = selectors.document_get(request.user, document_id, for_edit=True)
        if not ingestion.document_reprocess(actor=actor_from_request(request), document=document):
            return Response(error_body("conflict", "Only a document whose processing FAILED can be re-processed."),
                            status=status.HTTP_409_CONFLICT)
        return Response(document_out(selectors.document_get_managed(request.user, document.pk)),
                        status=status.HTTP_202_ACCEPTED)


class DocumentDownloadView(APIView):
    def get(self, request: Request, document_id: str) -> FileResponse:
        document = selectors.document_get(request.user, document_id)
        version = document.current_version or document.latest_version
        if version is None:
            raise selectors.NotFound("document")
        from access.services import audit_record

        audit_record(actor=actor_from_request(request), action="document.download", target_type="document",
                     target_id=document.pk, detail={"version": version.number})
        response = FileResponse(open(blob_path(version.sha256), "rb"), as_attachment=True,
                                filename=document.title, content_type="application/octet-stream")
        return response


class ChunkView(APIView):
    """A passage; with ``?context=N`` (up to 2000) also the N characters of the document before and after it."""

    class Input(serializers.Serializer):
        context = serializers.IntegerField(required=False, min_value=0, max_value=2000, default=0)  # type: ignore[assignment]  # ?context=; DRF moves it into _declared_fields

    def get(self, request: Request, chunk_id: str) -> Response:
        chunk = selectors.chunk_get(request.user, chunk_id)
        data = self.Input(data=request.query_params)
        data.is_valid(raise_exception=True)
        body = {
            "chunk_id": chunk.pk, "document_id": chunk.document_id, "title": chunk.document.title,
            "page": chunk.page, "heading": chunk.heading, "text": chunk.text,
            "char_start": chunk.char_start, "char_end": chunk.char_end,
        }
        if context := data.validated_data["context"]:
            text = chunk.version.text
            body["context_before"] = text[max(0, chunk.char_start - context):chunk.char_start]
            body["context_after"] = text[chunk.char_end:chunk.char_end + context]
        return Response(body)


class SearchView(APIView):
    class Input(serializers.Serializer):
        q = serializers.CharField(max_length=2000, trim_whitespace=True)
        collection = serializers.IntegerField(required=False, min_value=1)
        # "Attach" documents by id: search only inside them (each must be readable, else 404).
        document = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=50)
        k = serializers.IntegerField(required=False, min_value=1, default=10)
        mode = serializers.ChoiceField(choices=SEARCH_MODES, required=False, default="hybrid")
        rerank = serializers.BooleanField(required=False, default=True)  # rerank=0 skips the cross-encoder

    def get(self, request: Request) -> Response:
        data = self.Input(data=request.query_params)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        k = min(params["k"], settings.CAIRN_SEARCH_MAX_K)
        collection_ids = None
        if "collection" in params:
            collection_ids = [selectors.collection_get(request.user, params["collection"]).pk]
        document_ids = attached_documents(request, params.get("document"))
        outcome = search.search_outcome(
            user=signed_in_user(request), actor=actor_from_request(request), query=params["q"],
            collection_ids=collection_ids, k=k, mode=params["mode"], rerank=params["rerank"],
            document_ids=document_ids,
        )
        results = outcome.results
        terms = highlight_terms(params["q"])
        return Response({
            "query": params["q"],
            # The query as the lexical index tokenizes it (CJK bigrams, stems, NFKC), and per result the pieces
            # of its text those terms match: what a client highlights (kb/retrieval/highlight.py).
            "query_terms": terms,
            # True when neither leg found strong evidence (kb/retrieval/evidence.py): the results are the
            # least bad passages in scope, probably unrelated to the query.
            "no_good_match": outcome.evidence.no_good_match,
            "evidence": outcome.evidence.as_dict(),
            "results": [
                {
                    "chunk_id": r.chunk_id, "document_id": r.document_id, "collection_id": r.collection_id,
                    "title": r.title, "version": r.version, "page": r.page, "heading": r.heading,
                    "score": round(r.score, 6), "dense_rank": r.dense_rank, "lexical_rank": r.lexical_rank,
                    "rerank_score": None if r.rerank_score is None else round(r.rerank_score, 6),
                    "text": r.text, "char_start": r.char_start, "char_end": r.char_end,
                    "highlights": highlight_spans(terms, r.text),
                }
                for r in results
            ],
        })


def attached_documents(request: Request, ids: list[int] | None) -> list[int] | None:
    """Documents named by id in a search or question: every one must be readable (404 otherwise)."""
    if not ids:
        return None
    return [selectors.document_get(request.user, document_id).pk for document_id in dict.fromkeys(ids)]


class AskView(ask_stream.AskingView):
    """Answer a question; ``"stream": true`` (or ``Accept: text/event-stream``) streams it as SSE.

    Refused with 429 (this user's concurrent generations) or 503 (the pool is
    full), both with ``Retry-After``; see ``kb/api/ask_stream.py`` for the events.
    """

    class Input(serializers.Serializer):
        question = serializers.CharField(max_length=4000, trim_whitespace=True)
        collection = serializers.IntegerField(required=False, min_value=1)
        # "Attach" documents by id: answer only from them (each must be readable, else 404).
        documents = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=50)
        stream = serializers.BooleanField(required=False, default=False)
        # Capped at CAIRN_MAX_NEW_TOKENS (asking for more gets the cap).
        max_new_tokens = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)

    def post(self, request: Request) -> Response | StreamingHttpResponse:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        collection_ids = None
        if "collection" in params:
            collection_ids = [selectors.collection_get(request.user, params["collection"]).pk]
        document_ids = attached_documents(request, params.get("documents"))
        wants_stream = params["stream"] or "text/event-stream" in request.headers.get("Accept", "")
        actor, question, limit = actor_from_request(request), params["question"], params.get("max_new_tokens")
        try:
            if wants_stream:
                with timed(ASK_LATENCY, mode="stream"):
                    asking = answering.ask_stream(user=signed_in_user(request), actor=actor, question=question,
                                                  collection_ids=collection_ids, max_new_tokens=limit,
                                                  document_ids=document_ids)
                if asking.generation is None:
                    return ask_stream.no_good_match_response()
                return ask_stream.event_stream_response(request._request, asking.generation, asking.passages)
            with timed(ASK_LATENCY, mode="sync"):
                result = answering.answer_question(user=signed_in_user(request), actor=actor, question=question,
                                                   collection_ids=collection_ids, max_new_tokens=limit,
                                                   document_ids=document_ids)
        except Exception as exc:
            refused = refusal_response(exc)
            if refused is None:
                raise
            return refused
        return Response(answer_out(result.answer, result.passages, no_good_match=result.no_good_match))
