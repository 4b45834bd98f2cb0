"""``POST /api/v1/ask`` as server-sent events (``"stream": true`` or ``Accept: text/event-stream``).

Events, in order::

    event: start      data: {"generation_id", "passages"}
    event: reasoning  data: {"text"}        (zero or more; DeepSeek-R1 <think> text)
    event: token      data: {"text"}        (zero or more; the answer as it is written)
    event: citations  data: {"citation_mode", "citations": [...], "passages": [...]}
    event: done       data: {"answer", "reasoning", "backend", "generated", "passages_used", "metrics", …}
or, instead of citations + done:
    event: error      data: {"error": {"code", "message", "details"}}

Comment lines (``: keepalive``) mark silence so proxies keep the connection.
Under ASGI (``cairn_serve``/``cairn_web``) the body is an async iterator:
when the client disconnects, Django cancels it and the generation is
cancelled; under WSGI a sync iterator does the same when the server closes it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse

from inference.types import Passage
from kb import answering
from kb.api.answers import CITATION_KEYS, answer_out
from kb.api.errors import error_body


def _frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class _Framer:
    def __init__(self, generation: answering.Generation, passages: Sequence[Passage]) -> None:
        self.generation = generation
        self.passages = tuple(passages)

    def start(self) -> bytes:
        return _frame("start", {"generation_id": self.generation.generation_id, "passages": len(self.passages)})

    def frames(self, event: answering.GenerationEvent) -> bytes:
        if event["event"] == "keepalive":
            return b": keepalive\n\n"
        if event["event"] == "reasoning" or event["event"] == "token":
            return _frame(event["event"], {"text": event["text"]})
        if event["event"] == "done":
            from inference.wire import answer_from_dict

            body = answer_out(answer_from_dict(event["answer"]), self.passages)
            citations = {key: body.pop(key) for key in CITATION_KEYS}
            done = {**body, "generation_id": self.generation.generation_id, "metrics": event.get("metrics", {})}
            return _frame("citations", citations) + _frame("done", done)
        return _frame("error", error_body(event["code"], event["message"]))


class _SyncBody:
    """The response body; Django calls ``close`` when the response ends, even if it was never iterated."""

    def __init__(self, frames: Any, generation: answering.Generation) -> None:
        self.frames = frames
        self.generation = generation

    def __iter__(self) -> Any:
        return self.frames

    def close(self) -> None:
        self.frames.close()
        self.generation.close()


class _AsyncBody(_SyncBody):
    def __aiter__(self) -> Any:
        return self.frames

    def __iter__(self) -> Any:
        raise TypeError("an asynchronous body")

    def close(self) -> None:
        # The async generator's own ``finally`` cancels; this covers a body never iterated.
        self.generation.close()


def no_good_match_response() -> StreamingHttpResponse:
    """The stream of an ask whose evidence check found nothing relevant: the fixed answer, no generation."""
    body = answer_out(answering.no_good_match_answer(), (), no_good_match=True)
    citations = {key: body.pop(key) for key in CITATION_KEYS}
    frames = [_frame("start", {"generation_id": None, "passages": 0}), _frame("token", {"text": body["answer"]}),
              _frame("citations", citations), _frame("done", {**body, "generation_id": None, "metrics": {}})]
    response = StreamingHttpResponse(iter(frames), content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    return response


def event_stream_response(request: HttpRequest, generation: answering.Generation,
                          passages: Sequence[Passage]) -> StreamingHttpResponse:
    framer = _Framer(generation, passages)
    body: Any
    if isinstance(request, ASGIRequest):
        async def body_async() -> AsyncIterator[bytes]:
            yield framer.start()
            async for event in generation.aevents():
                yield framer.frames(event)

        body = _AsyncBody(body_async(), generation)
    else:
        def body_sync() -> Iterator[bytes]:
            yield framer.start()
            for event in generation.events():
                yield framer.frames(event)

        body = _SyncBody(body_sync(), generation)
    response = StreamingHttpResponse(body, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through as they come
    return response
