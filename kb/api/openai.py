"""An OpenAI-compatible knowledge-base endpoint: each readable collection is a "model" chat clients can pick.

``GET /v1/models`` lists the collections the caller may read (the same
selector as ``GET /api/v1/collections``, so a key limited to some
collections lists only those) as ``cairn-<collection id>``.
``POST /v1/chat/completions`` answers the conversation's last question from
that collection through the ask flow of ``/api/v1/ask`` (the same retrieval
inside the read scope, admission, generation pool and ``kb.ask`` audit
event, marked ``via: openai``); earlier turns make the question standalone
(``kb.followup``).  The answer keeps its ``[n]`` markers; the passages they
point at are in an extra ``citations`` field of the message (streamed: of
the final chunk), DeepSeek reasoning in ``reasoning_content``.  Errors have
OpenAI's shape, ``{"error": {"message", "type", "code", "param"}}``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.http import StreamingHttpResponse
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from access.services import actor_from_request, signed_in_user
from inference.types import Answer, Passage
from kb import answering, followup, selectors
from kb.api import ask_stream, errors
from kb.api.answers import answer_out, ask_refusal
from kb.exceptions import NotFound
from kb.models import Collection

MODEL_PREFIX = "cairn-"
_MODEL = re.compile(r"^cairn-([1-9][0-9]{0,17})$")
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# The ask API's question limit: the last user message is the question.
MAX_QUESTION_CHARS = 4000

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
          415: "invalid_request_error", 429: "rate_limit_error"}


def model_id(collection: Collection) -> str:
    return f"{MODEL_PREFIX}{collection.pk}"


def model_out(collection: Collection) -> dict[str, Any]:
    return {"id": model_id(collection), "object": "model", "created": int(collection.created_at.timestamp()),
            "owned_by": "cairn", "name": collection.name, "description": collection.description}


class ModelNotFound(NotFound):
    def __init__(self, model: str) -> None:
        super().__init__("collection")
        self.model = model


def model_collection(user: Any, model: str) -> Collection:
    """The collection a model id names, if the caller may read it; ``ModelNotFound`` (404) otherwise."""
    match = _MODEL.match(model.strip())
    if match is None:
        raise ModelNotFound(model)
    try:
        return selectors.collection_get(user, int(match.group(1)))
    except NotFound:
        raise ModelNotFound(model) from None


def openai_error(status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def openai_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Cairn's API error handling (audited denials, outages as 503), in OpenAI's error shape."""
    if isinstance(exc, ModelNotFound):  # the denial's audit event names the model asked for
        context = {**context, "kwargs": {"collection_id": exc.model[:200]}}
    response = errors.exception_handler(exc, context)
    if response is None:
        return None  # unexpected: Django's handler500 answers
    body = response.data.get("error", {}) if isinstance(response.data, dict) else {}
    message, code, param = str(body.get("message", "")), body.get("code"), None
    if isinstance(exc, ModelNotFound):
        message = (f"The model {exc.model[:200]!r} does not exist or you do not have access to it; "
                   "GET /v1/models lists yours.")
        code, param = "model_not_found", "model"
    elif isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict) and exc.detail:
        param = str(next(iter(exc.detail)))
    elif isinstance(exc, exceptions.AuthenticationFailed | exceptions.NotAuthenticated):
        code = "invalid_api_key" if isinstance(exc, exceptions.AuthenticationFailed) else "missing_api_key"
    response.data = openai_error(response.status_code, message, code, param)
    return response


class OpenAIView(ask_stream.AskingView):
    """Errors in OpenAI's shape (and, as every asking view's, always JSON)."""

    def get_exception_handler(self) -> Any:
        return openai_exception_handler


class ModelsView(OpenAIView):
    def get(self, request: Request) -> Response:
        collections = selectors.readable_collections(request.user).order_by("pk")
        return Response({"object": "list", "data": [model_out(c) for c in collections]})


class ModelView(OpenAIView):
    def get(self, request: Request, model: str) -> Response:
        return Response(model_out(model_collection(request.user, model)))


class _Message(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    # A string, OpenAI's list of parts ({"type": "text", "text"}, images …), or null (assistant tool calls).
    content = serializers.JSONField(required=False, allow_null=True)

    def validate_content(self, value: Any) -> Any:
        if value is None or isinstance(value, str):
            text = value or ""
        elif isinstance(value, list) and all(isinstance(part, Mapping) for part in value):
            text = " ".join(str(part.get("text", "")) for part in value if part.get("type") == "text")
        else:
            raise serializers.ValidationError("content must be a string or a list of content parts.")
        if len(text) > settings.CAIRN_CHAT_MAX_MESSAGE_CHARS:
            raise serializers.ValidationError(
                f"a message may have at most {settings.CAIRN_CHAT_MAX_MESSAGE_CHARS} characters "
                "(CAIRN_CHAT_MAX_MESSAGE_CHARS).")
        return value


class ChatCompletionsView(OpenAIView):
    """``POST /v1/chat/completions``: the answer from the collection the model names, plain or streamed."""

    class Input(serializers.Serializer):
        model = serializers.CharField(max_length=200)
        messages = _Message(many=True, allow_empty=False)
        stream = serializers.BooleanField(required=False, default=False)
        # Capped at CAIRN_MAX_NEW_TOKENS, like the ask API's max_new_tokens.
        max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
        max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
        n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=1)
        # temperature, top_p, user, stream_options, … are accepted and ignored: the answer is grounded.

        def validate_messages(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if len(value) > settings.CAIRN_CHAT_MAX_MESSAGES:
                raise serializers.ValidationError(
                    f"at most {settings.CAIRN_CHAT_MAX_MESSAGES} messages (CAIRN_CHAT_MAX_MESSAGES).")
            users = [m for m in value if m["role"] == "user"]
            if not users:
                raise serializers.ValidationError("the conversation needs a user message.")
            last = followup.message_text(users[-1].get("content"))
            if not last.strip():
                raise serializers.ValidationError("the last user message is empty.")
            if len(last) > MAX_QUESTION_CHARS:
                raise serializers.ValidationError(
                    f"the last user message (the question) may have at most {MAX_QUESTION_CHARS} characters.")
            return value

    def post(self, request: Request) -> Response | StreamingHttpResponse:
        length = request.META.get("CONTENT_LENGTH")
        if length and str(length).isdigit() and int(length) > settings.CAIRN_CHAT_MAX_BYTES:
            return Response(openai_error(413, f"The request body is larger than "
                                              f"{settings.CAIRN_CHAT_MAX_BYTES // 1024} KB (CAIRN_CHAT_MAX_KB).",
                                         "too_large"), status=413)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        model = params["model"]
        collection = model_collection(request.user, model)
        question = followup.standalone_question(params["messages"])
        limit = params.get("max_completion_tokens") or params.get("max_tokens")
        ask: dict[str, Any] = {"user": signed_in_user(request), "actor": actor_from_request(request),
                               "question": question, "collection_ids": [collection.pk], "max_new_tokens": limit,
                               "via": "openai"}
        try:
            if params["stream"]:
                asking = answering.ask_stream(**ask)
                framer = ChunkFramer(model=model, passages=asking.passages)
                if asking.generation is None:  # nothing relevant found: the fixed answer, no generation
                    return ask_stream.no_good_match_response(framer)
                return ask_stream.event_stream_response(request._request, asking.generation, asking.passages,
                                                        framer)
            result = answering.answer_question(**ask)
        except Exception as exc:
            refusal = ask_refusal(exc)
            if refusal is None:
                raise
            headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
            return Response(openai_error(refusal.status, refusal.message, refusal.code), status=refusal.status,
                            headers=headers)
        return Response(completion_out(result.answer, result.passages, model=model))


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion_out(answer: Answer, passages: Sequence[Passage], *, model: str) -> dict[str, Any]:
    """A ``chat.completion`` object; ``citations`` (and ``reasoning_content``) ride on the message."""
    body = answer_out(answer, passages)
    message: dict[str, Any] = {"role": "assistant", "content": body["answer"], "citations": body["citations"],
                               "citation_mode": body["citation_mode"]}
    if body["reasoning"]:
        message["reasoning_content"] = body["reasoning"]
    return {"id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": body["finish_reason"],
                         "logprobs": None}]}


class ChunkFramer:
    """Generation events as OpenAI ``chat.completion.chunk`` events, ending in ``data: [DONE]``.

    Reasoning pieces go in ``delta.reasoning_content``, answer pieces in
    ``delta.content``; the final chunk (``finish_reason``: "stop", or "length"
    when the answer was cut at the token limit) carries
    ``citations``.  A failure after the stream began is an ``error`` event
    (the openai SDKs raise it), then ``[DONE]``.
    """

    def __init__(self, *, model: str, passages: Sequence[Passage]) -> None:
        self.model = model
        self.passages = tuple(passages)
        self.id = _completion_id()
        self.created = int(time.time())
        self.streamed = False  # whether any answer text went out as it was written

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
                 **extra}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def frames(self, event: answering.GenerationEvent) -> bytes:
        if event["event"] == "keepalive":
            return b": keepalive\n\n"
        if event["event"] == "reasoning":
            return self._chunk({"reasoning_content": event["text"]})
        if event["event"] == "token":
            self.streamed = self.streamed or bool(event["text"])
            return self._chunk({"content": event["text"]})
        if event["event"] == "done":
            from inference.wire import answer_from_dict

            body = answer_out(answer_from_dict(event["answer"]), self.passages)
            head = b"" if self.streamed or not body["answer"] else self._chunk({"content": body["answer"]})
            return head + self._chunk({}, body["finish_reason"], citations=body["citations"],
                                      citation_mode=body["citation_mode"]) + b"data: [DONE]\n\n"
        error = {"error": {"message": event["message"], "type": "server_error", "code": event["code"],
                           "param": None}}
        return f"data: {json.dumps(error, ensure_ascii=False)}\n\n".encode() + b"data: [DONE]\n\n"
