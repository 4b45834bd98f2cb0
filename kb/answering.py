"""Answer orchestration: permission-scoped retrieval → numbered passages → generator.

Generation runs where the shape puts it: in this process (personal) or on
the ``inference`` Celery pool (team), where the model stays resident on the
GPU workers — the web process never loads a language model in the team shape.
Either way the request goes through admission control (``admission``) and a
generation pool (``inference.pool``), and its events come back as they are
generated (``Generation.events`` / ``aevents``), ready to be streamed.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext, gettext_noop

from access.models import User
from access.services import Actor, audit_record
from inference.pool import ErrorEvent, PoolEvent, is_final
from inference.types import Answer, GenerationRequest, Passage
from kb.search import SearchResult, chunk_search_outcome
from kb.selectors import ReadScope, read_scope

if TYPE_CHECKING:
    import redis

    from inference.admission import Admission
    from inference.pool import GenerationPool
    from inference.transport import EventSource


class KeepaliveEvent(TypedDict):
    """Seconds of silence from the generation: proxies should keep the connection."""

    event: Literal["keepalive"]


GenerationEvent = PoolEvent | KeepaliveEvent


def redis_url() -> str:
    """The team shape's Redis (settings refuse Celery tasks without one)."""
    url = settings.CAIRN_REDIS_URL
    if not url:
        raise ImproperlyConfigured("CAIRN_REDIS_URL is not set")
    return url


# What ask answers, without calling the generator, when the evidence check finds nothing relevant.
NO_GOOD_MATCH_ANSWER = gettext_noop("No good match in your documents: nothing you can read is relevant enough to this "
                        "question to answer it from.")


@dataclass(frozen=True)
class AskResult:
    answer: Answer
    passages: tuple[Passage, ...]
    cited: tuple[Passage, ...]
    no_good_match: bool = False


def passages_from(results: Sequence[SearchResult]) -> tuple[Passage, ...]:
    return tuple(
        Passage(
            number=i + 1, chunk_id=r.chunk_id, document_id=r.document_id, title=r.title,
            page=r.page, heading=r.heading, text=r.text,
        )
        for i, r in enumerate(results)
    )


class GenerationFailed(Exception):
    """A generation ended without an answer; ``code`` is the pool's error code (see ``inference.pool``)."""

    STATUS = {"timeout": 504, "pool_full": 503, "no_worker": 503, "worker_lost": 503, "prompt_too_long": 400,
              "cancelled": 499}

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return self.STATUS.get(self.code, 502)


@functools.cache
def _redis(url: str) -> redis.Redis:
    """One client (and connection pool) per process for the asks' Redis reads."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=2)


_admission_lock = threading.Lock()
_admission_instance: Admission | None = None


def admission() -> Admission:
    """The process's admission control: Redis-shared in the team shape, in-process otherwise."""
    global _admission_instance
    with _admission_lock:
        if _admission_instance is None:
            from inference.admission import LocalAdmission, RedisAdmission

            pool_limit, user_limit = settings.CAIRN_GEN_QUEUE_SIZE, settings.CAIRN_GEN_USER_CONCURRENCY
            if settings.CAIRN_TASKS == "celery":
                import redis

                _admission_instance = RedisAdmission(
                    redis.Redis.from_url(redis_url()), lease=settings.CAIRN_ASK_TIMEOUT + 60,
                    pool_limit=pool_limit, user_limit=user_limit,
                )
            else:
                _admission_instance = LocalAdmission(pool_limit=pool_limit, user_limit=user_limit)
        return _admission_instance


def reset_admission() -> None:
    """Forget the admission object so changed settings apply (tests)."""
    global _admission_instance
    with _admission_lock:
        _admission_instance = None


def local_pool() -> GenerationPool:
    """The in-process generation pool (personal shape): one worker thread owning the model."""
    from inference.pool import get_pool
    from kb.metrics import local_generation_publish_start

    local_generation_publish_start()  # so that /metrics answered by a sibling web process sees this one's
    return get_pool(
        settings.CAIRN_LLM_BACKEND, settings.CAIRN_LLM_PATH,
        max_batch=settings.CAIRN_GEN_MAX_BATCH, max_wait=settings.CAIRN_GEN_BATCH_WAIT_MS / 1000,
        max_queue=settings.CAIRN_GEN_QUEUE_SIZE, timeout=settings.CAIRN_GEN_TIMEOUT,
        **getattr(settings, "CAIRN_LLM_OPTIONS", {}),
    )


class Generation:
    """A started generation: its events as they come (sync or asyncio), and a way to stop it.

    Iterating ``events``/``aevents`` ends with the final event (``done`` or
    ``error``); ``{"event": "keepalive"}`` marks ``heartbeat`` seconds of
    silence. Stopping early (the client went away) cancels the generation.
    The admission slot is released exactly once, when iteration ends.
    """

    def __init__(self, *, generation_id: str, source: EventSource, release: Callable[[], None]) -> None:
        self.generation_id = generation_id
        self.source = source
        self._release = release
        self._released = False
        self._lock = threading.Lock()
        self.finished = False
        self.deadline = time.monotonic() + settings.CAIRN_ASK_TIMEOUT
        self._quiet_since = time.monotonic()

    def _timeout_event(self) -> ErrorEvent:
        return {"event": "error", "code": "timeout",
                "message": f"No answer within {settings.CAIRN_ASK_TIMEOUT:g} seconds (CAIRN_ASK_TIMEOUT)."}

    def _end(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        if not self.finished:
            self.source.cancel()
        self._release()

    def close(self) -> None:
        """Cancel (unless finished) and release; idempotent. For a response that is never iterated."""
        self._end()

    def _after_read(self, batch: list[PoolEvent] | None, heartbeat: float) -> list[GenerationEvent]:
        """What to pass on after one read: the batch up to its final event, or a keepalive after silence."""
        now = time.monotonic()
        if not batch:
            if now - self._quiet_since >= heartbeat:
                self._quiet_since = now
                return [{"event": "keepalive"}]
            return []
        self._quiet_since = now
        out: list[GenerationEvent] = []
        for event in batch:
            out.append(event)
            if is_final(event):
                self.finished = True
                break
        return out

    def _next_wait(self) -> float | None:
        """How long the next read may wait; None once the final event came or the deadline passed."""
        left = self.deadline - time.monotonic()
        return None if self.finished or left <= 0 else min(left, 1.0)

    def _close_source(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    def events(self, heartbeat: float = 15.0) -> Iterator[GenerationEvent]:
        self._quiet_since = time.monotonic()
        try:
            while (wait := self._next_wait()) is not None:
                yield from self._after_read(self.source.read(wait), heartbeat)
            if not self.finished:
                yield self._timeout_event()
        finally:
            self._end()
            self._close_source()

    async def aevents(self, heartbeat: float = 15.0) -> AsyncIterator[GenerationEvent]:
        self._quiet_since = time.monotonic()
        try:
            while (wait := self._next_wait()) is not None:
                for event in self._after_read(await self.source.aread(wait), heartbeat):
                    yield event
            if not self.finished:
                yield self._timeout_event()
        finally:
            # Runs when the ASGI server cancels the response because the client disconnected.
            self._end()
            aclose = getattr(self.source, "aclose", None)
            if aclose is not None:
                await aclose()
            self._close_source()

    def result(self) -> Answer:
        """Run to completion; raises ``GenerationFailed`` when it ends without an answer."""
        from inference.wire import answer_from_dict

        for event in self.events():
            if event["event"] == "done":
                return answer_from_dict(event["answer"])
            if event["event"] == "error":
                raise GenerationFailed(event.get("code", "internal"), event.get("message", "The generation failed."))
        raise GenerationFailed("internal", "The generation ended without an answer.")


def generation_start(request: GenerationRequest, *, user: User) -> Generation:
    """Admit and start generating ``request`` where the shape puts it.

    Raises ``inference.admission.AdmissionRefused`` (429 / 503) before anything
    is queued, and ``GenerationFailed`` when the local pool refuses it.
    """
    from inference.pool import PoolFull

    generation_id = uuid.uuid4().hex
    request = replace(request, request_id=generation_id)
    gate = admission()
    key = str(user.pk)
    gate.acquire(key, generation_id)

    def release() -> None:
        gate.release(key, generation_id)

    try:
        if settings.CAIRN_TASKS == "celery":
            from celery import current_app

            from inference.tasks import TASK_GENERATE
            from inference.transport import RedisSource, inference_workers_alive
            from inference.wire import request_to_dict

            if not inference_workers_alive(_redis(redis_url())):
                raise GenerationFailed("no_worker", "No inference worker is running, so nothing can answer now. "
                                                    "Start one with: manage.py cairn_worker inference")
            current_app.send_task(TASK_GENERATE, args=[request_to_dict(request)], queue="inference",
                                  ignore_result=True)
            source: EventSource = RedisSource(redis_url(), generation_id)
        else:
            from inference.transport import TicketSource

            try:
                source = TicketSource(local_pool().submit(request))
            except PoolFull as exc:
                raise GenerationFailed("pool_full", str(exc)) from exc
    except BaseException:
        release()
        raise
    return Generation(generation_id=generation_id, source=source, release=release)


def ask_request(question: str, passages: tuple[Passage, ...], max_new_tokens: int | None = None) -> GenerationRequest:
    """The generation request for a question; the answer length is capped by CAIRN_MAX_NEW_TOKENS."""
    cap = settings.CAIRN_MAX_NEW_TOKENS
    return GenerationRequest(
        question=question, passages=passages, max_new_tokens=min(cap, max_new_tokens or cap),
    )


def ask_audit(*, actor: Actor, question: str, collection_ids: Sequence[int] | None, scope: ReadScope,
              passages: Sequence[Passage], cited: Sequence[Passage] | None, backend: str,
              via: str | None = None) -> None:
    detail: dict[str, Any] = {
        "question_chars": len(question),
        "chunks_served": [p.chunk_id for p in passages],
        "backend": backend,
    }
    if via is not None:
        detail["via"] = via  # e.g. "openai": asked through /v1/chat/completions
    if cited is None:
        detail["streamed"] = True  # audited before the answer exists: what was served, not what was cited
    else:
        detail["chunks_cited"] = [p.chunk_id for p in cited]
    audit_record(
        actor=actor, action="kb.ask", target_type="collection",
        target_id=",".join(str(c) for c in collection_ids) if collection_ids else "*",
        rule=scope.rule,
        detail=detail,
    )


def retrieve_passages(
    *, user: User, question: str, collection_ids: Sequence[int] | None, document_ids: Sequence[int] | None = None,
    scope: ReadScope | None = None,
) -> tuple[tuple[Passage, ...], bool]:
    """The passages to answer from, and whether they are only unrelated ones ("no good match").

    True only when there *are* passages and the evidence check finds them weak: with none at all the
    generator's own "no passages" answer runs, as it always did.
    """
    outcome = chunk_search_outcome(user, question, collection_ids=collection_ids, k=settings.CAIRN_ASK_PASSAGES,
                                   document_ids=document_ids, scope=scope)
    if outcome.results and outcome.evidence.no_good_match:
        return (), True
    return passages_from(outcome.results), False


def no_good_match_answer() -> Answer:
    # The fixed answer is read by a person: in the asker's language (English stays NO_GOOD_MATCH_ANSWER).
    return Answer(answer=gettext(NO_GOOD_MATCH_ANSWER), reasoning="", cited_numbers=(), backend="none", generated=False,
                  passages_used=0, passages_offered=0)


def cited_passages(answer: Answer, passages: Sequence[Passage]) -> tuple[Passage, ...]:
    by_number = {p.number: p for p in passages}
    return tuple(by_number[n] for n in answer.cited_numbers if n in by_number)


@dataclass(frozen=True)
class Asking:
    """A question whose read scope is decided, whose passages are retrieved and whose generation runs."""

    scope: ReadScope
    passages: tuple[Passage, ...]
    generation: Generation | None  # None when the evidence check found no good match: nothing to generate
    no_good_match: bool = False


def ask_start(
    *, user: User, question: str, collection_ids: Sequence[int] | None = None,
    max_new_tokens: int | None = None, document_ids: Sequence[int] | None = None,
) -> Asking:
    """Decide the scope, retrieve inside it and start generating: the first half of every ask.

    Raises ``AdmissionRefused`` or ``GenerationFailed`` before anything is queued.
    """
    scope = read_scope(user, collection_ids=collection_ids)
    passages, no_good_match = retrieve_passages(user=user, question=question, collection_ids=collection_ids,
                                                document_ids=document_ids, scope=scope)
    if no_good_match:
        return Asking(scope=scope, passages=(), generation=None, no_good_match=True)
    generation = generation_start(ask_request(question, passages, max_new_tokens), user=user)
    return Asking(scope=scope, passages=passages, generation=generation)


def ask_stream(
    *, user: User, actor: Actor, question: str, collection_ids: Sequence[int] | None = None,
    max_new_tokens: int | None = None, document_ids: Sequence[int] | None = None, via: str | None = None,
) -> Asking:
    """An ask whose answer is streamed: audited now, with what was served (the answer does not exist yet)."""
    asking = ask_start(user=user, question=question, collection_ids=collection_ids,
                       max_new_tokens=max_new_tokens, document_ids=document_ids)
    ask_audit(actor=actor, question=question, collection_ids=collection_ids, scope=asking.scope,
              passages=asking.passages, cited=None, backend=settings.CAIRN_LLM_BACKEND, via=via)
    return asking


def answer_question(
    *, user: User, actor: Actor, question: str, collection_ids: Sequence[int] | None = None,
    max_new_tokens: int | None = None, document_ids: Sequence[int] | None = None, via: str | None = None,
) -> AskResult:
    """An ask run to completion, audited with the passages the answer cites."""
    asking = ask_start(user=user, question=question, collection_ids=collection_ids,
                       max_new_tokens=max_new_tokens, document_ids=document_ids)
    answer = asking.generation.result() if asking.generation is not None else no_good_match_answer()
    cited = cited_passages(answer, asking.passages)
    ask_audit(actor=actor, question=question, collection_ids=collection_ids, scope=asking.scope,
              passages=asking.passages, cited=cited, backend=answer.backend, via=via)
    return AskResult(answer=answer, passages=asking.passages, cited=cited, no_good_match=asking.no_good_match)
