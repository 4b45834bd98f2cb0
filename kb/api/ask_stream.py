"""``POST /api/v1/ask`` as server-sent events (``"stream": true`` or ``Accept: text/event-stream``).

Events, in order::

    event: start      data: {"generation_id", "passages"}
    event: reasoning  data: {"text"}        (zero or more; DeepSeek-R1 <think> text)
    event: token      data: {"text"}        (zero or more; the answer as it is written)
    event: citations  data: {"citation_mode", "citations": [...], "passages": [...]}
    event: done       data: {"answer", "reasoning", "backend", "model", "generated", "finish_reason",
                             "truncated", "passages_used", "metrics", …}
or, instead of citations + done:
    event: error      data: {"error": {"code", "message", "details"}}

Comment lines (``: keepalive``) mark silence so proxies keep the connection.
Under ASGI (``cairn_serve``/``cairn_web``) the body is an async iterator:
when the client disconnects, Django cancels it and the generation is
cancelled; under WSGI a sync iterator does the same when the server closes it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Protocol

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from inference.types import Passage
from kb import answering
from kb.api.answers import CITATION_KEYS, answer_out, localised
from kb.api.errors import error_body


class AskingView(APIView):
    """A view that answers questions (ask, conversations, ``/v1/`` chat).

    It changes nothing, so a read-only API key may use it (``reads_only``),
    and its errors are JSON even for a client that asked for
    ``text/event-stream``.
    """

    reads_only = True

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        return JSONRenderer(), "application/json"


def _frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class Framer(Protocol):
    """Turns a generation's events into the bytes of one streamed response (this API's, or OpenAI's)."""

    def start(self) -> bytes: ...

    def frames(self, event: answering.GenerationEvent) -> bytes: ...


class EventFramer:
    """This API's events.  Keeps the finished answer (``final``, as ``answer_out`` gives it) or the error."""

    def __init__(self, generation: answering.Generation | None, passages: Sequence[Passage],
                 start_extra: dict[str, Any] | None = None) -> None:
        self.generation = generation
        self.passages = tuple(passages)
        self.start_extra = start_extra or {}
        self.no_good_match = False  # set for the fixed answer of ``no_good_match_response``
        self.final: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None

    def start(self) -> bytes:
        return _frame("start", {"generation_id": self.generation.generation_id if self.generation else None,
                                "passages": len(self.passages), **self.start_extra})

    def frames(self, event: answering.GenerationEvent) -> bytes:
        if event["event"] == "keepalive":
            return b": keepalive\n\n"
        if event["event"] == "reasoning":
            return _frame("reasoning", {"text": event["text"]})
        if event["event"] == "token":  # the extractive label arrives as a token of its own
            return _frame("token", {"text": localised(event["text"])})
        if event["event"] == "done":
            from inference.wire import answer_from_dict

            body = answer_out(answer_from_dict(event["answer"]), self.passages, no_good_match=self.no_good_match)
            self.final = dict(body)
            citations = {key: body.pop(key) for key in CITATION_KEYS}
            done = {**body, "generation_id": self.generation.generation_id if self.generation else None,
                    "metrics": event.get("metrics", {})}
            return _frame("citations", citations) + _frame("done", done)
        self.error = error_body(event["code"], event["message"])
        return _frame("error", self.error)


class _SyncBody:
    """The response body; Django calls ``close`` when the response ends, even if it was never iterated."""

    def __init__(self, frames: Any, generation: answering.Generation | None,
                 on_close: Callable[[], None] | None = None) -> None:
        self.frames = frames
        self.generation = generation
        self.on_close = on_close

    def __iter__(self) -> Any:
        return self.frames

    def close(self) -> None:
        if hasattr(self.frames, "close"):
            self.frames.close()
        if self.generation is not None:
            self.generation.close()
        self._closed()

    def _closed(self) -> None:
        # Django calls ``close`` in a synchronous thread (under ASGI too), so ``on_close`` may use the ORM.
        if self.on_close is not None:
            on_close, self.on_close = self.on_close, None
            on_close()


class _AsyncBody(_SyncBody):
    def __aiter__(self) -> Any:
        return self.frames

    def __iter__(self) -> Any:
        raise TypeError("an asynchronous body")

    def close(self) -> None:
        # The async generator's own ``finally`` cancels; this covers a body never iterated.
        if self.generation is not None:
            self.generation.close()
        self._closed()


def no_good_match_response(framer: Framer | None = None,
                           on_close: Callable[[], None] | None = None) -> StreamingHttpResponse:
    """The stream of an ask whose evidence check found nothing relevant: the fixed answer, no generation.

    Framed by ``framer`` (default: this API's events; ``/v1/`` passes its
    chunk framer), with the same ``start``/``token``/``done`` shape as a
    generated answer; ``on_close`` as for ``event_stream_response``.
    """
    from inference.wire import answer_to_dict

    framer = framer or EventFramer(None, ())
    if isinstance(framer, EventFramer):
        framer.no_good_match = True
    answer = answering.no_good_match_answer()
    done: Any = {"event": "done", "answer": answer_to_dict(answer), "metrics": {}}
    frames = [framer.start(), framer.frames({"event": "token", "text": answer.answer}), framer.frames(done)]
    response = StreamingHttpResponse(_SyncBody(iter(frames), None, on_close),
                                     content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    return response


def event_stream_response(request: HttpRequest, generation: answering.Generation,
                          passages: Sequence[Passage], framer: Framer | None = None,
                          on_close: Callable[[], None] | None = None) -> StreamingHttpResponse:
    """The generation streamed as server-sent events, framed by ``framer`` (default: this API's events).

    Shared by ``/api/v1/ask``, conversations and ``/v1/chat/completions``:
    the same keepalives, cancellation on disconnect and admission release.
    ``on_close`` runs once when the response ends (finished, failed or the
    client gone), in a synchronous thread.
    """
    framer = framer or EventFramer(generation, passages)
    body: Any
    if isinstance(request, ASGIRequest):
        async def body_async() -> AsyncIterator[bytes]:
            yield framer.start()
            async for event in generation.aevents():
                yield framer.frames(event)

        body = _AsyncBody(body_async(), generation, on_close)
    else:
        def body_sync() -> Iterator[bytes]:
            yield framer.start()
            for event in generation.events():
                yield framer.frames(event)

        body = _SyncBody(body_sync(), generation, on_close)
    response = StreamingHttpResponse(body, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through as they come
    return response
