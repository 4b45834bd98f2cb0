"""How a generation's events travel from the pool to the web process.

* personal shape — the pool runs in the web process; ``TicketSource`` reads
  the ``Ticket`` directly (a thread condition, or an asyncio event woken from
  the pool's thread);
* team shape — the Celery task on the inference worker relays the ticket's
  events into a Redis stream ``cairn:gen:<id>:events`` (``relay``); the web
  process reads it with ``XREAD BLOCK`` (``RedisSource``, sync or asyncio).
  Cancelling sets ``cairn:gen:<id>:cancel``; the relaying task polls it and
  cancels the ticket, and the pool drops the row before its next decode step.

Events are the pool's plain dicts (see ``inference.pool``); the stream and
the cancel key expire on their own, so nothing accumulates in Redis.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from inference.pool import ErrorEvent, FinalEvent, PoolEvent, Ticket, is_final

if TYPE_CHECKING:  # redis is imported for real only by the team shape's sources (and the worker)
    import redis
    import redis.asyncio
    from redis.typing import XReadResponse

STREAM_TTL = 900  # seconds a finished (or abandoned) event stream stays in Redis
# A ready inference worker beats every ALIVE_EVERY seconds: its name in one sorted set, scored with the time of
# the beat by Redis's own clock (no skew between hosts); it counts as alive for ALIVE_TTL seconds.  The web
# refuses an ask at once when no worker is alive, and ends a stream whose worker stopped.  One key, so that a
# check is one round trip however many other keys (generation streams) Redis holds.
ALIVE_KEY = "cairn:inference:alive"
ALIVE_EVERY = 3.0
ALIVE_TTL = 10
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "
# KEYS[1] the set; ARGV: worker name, ALIVE_TTL.  Members silent for 10 TTLs are dropped.
_BEAT = _NOW + """redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 10 * tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], 10 * tonumber(ARGV[2]))
return 1"""
# KEYS[1] the set; ARGV: ALIVE_TTL, and optionally one worker's name.  Returns how many are alive (0 or 1 for one).
_ALIVE = _NOW + """if ARGV[2] then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if score and tonumber(score) >= now - tonumber(ARGV[1]) then return 1 end
  return 0
end
return redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]), '+inf')"""
LIVENESS_CHECK_EVERY = 2.0  # seconds of silence between two checks of a stream's worker
WORKER_LOST: ErrorEvent = {"event": "error", "code": "worker_lost",
                           "message": "The inference worker answering this question stopped; ask again."}

# XREAD's reply as redis-py returns it under RESP2, its default protocol (RESP3 would give a dict):
# [stream key, [(entry id, {field: value}), ...]] per stream; empty or None when the block timed out.
_StreamEntry = tuple[bytes | str, dict[bytes | str, bytes | str]]
_XReadReply = list[tuple[bytes | str, list[_StreamEntry]]] | None
_ID = re.compile(r"^[0-9a-f]{32}$")


def valid_generation_id(value: str) -> bool:
    return bool(_ID.match(value))


def stream_key(generation_id: str) -> str:
    return f"cairn:gen:{generation_id}:events"


def cancel_key(generation_id: str) -> str:
    return f"cairn:gen:{generation_id}:cancel"


def worker_key(generation_id: str) -> str:
    """Which inference worker took the generation (set by the task as it starts)."""
    return f"cairn:gen:{generation_id}:worker"


def _name(worker: bytes | str) -> str:
    return worker.decode() if isinstance(worker, bytes) else worker


def inference_workers_alive(client: redis.Redis, worker: bytes | str | None = None) -> int:
    """How many inference workers (or whether ``worker``) beat within the last ``ALIVE_TTL`` seconds."""
    args: list[str | int] = [ALIVE_TTL] if worker is None else [ALIVE_TTL, _name(worker)]
    return int(cast(int, client.eval(_ALIVE, 1, ALIVE_KEY, *args)))


# KEYS[1] the set; ARGV: ALIVE_TTL, a host name.  The names of that host's workers that are alive.
_ALIVE_ON = _NOW + """local found = {}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')) do
  if string.sub(name, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. ':' then table.insert(found, name) end
end
return found"""


def inference_workers_alive_on(client: redis.Redis, host: str) -> list[str]:
    """The inference workers of ``host`` (names ``host:pid``) whose model is loaded and that beat recently.

    A worker beats only after its model loaded (``inference.tasks``), so this
    is the readiness of an inference container: ``manage.py cairn_ready --pool
    inference`` run inside it asks for its own host name.
    """
    names = cast("list[bytes | str]", client.eval(_ALIVE_ON, 1, ALIVE_KEY, ALIVE_TTL, host))
    return sorted(_name(name) for name in names)


def inference_worker_beat(client: redis.Redis, worker: str) -> None:
    """``worker`` is ready and consumes the ``inference`` queue (for the next ``ALIVE_TTL`` seconds)."""
    client.eval(_BEAT, 1, ALIVE_KEY, worker, ALIVE_TTL)


@functools.cache
def shared_client(url: str) -> redis.Redis:
    """One Redis client (one connection pool) per process and URL for the streams' reads."""
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2)


# --- worker side ---------------------------------------------------------------------


def relay(ticket: Ticket, client: redis.Redis, generation_id: str, *, poll: float = 0.1) -> FinalEvent:
    """Copy ``ticket``'s events into its Redis stream until the final one; returns the final event.

    Between events (at least every ``poll`` seconds) the cancel key is checked,
    so a client that went away stops its generation within about ``poll``
    seconds plus one decode step.
    """
    key = stream_key(generation_id)
    index = 0
    last_check = 0.0
    while True:
        events = ticket.events_since(index, poll)
        index += len(events)
        if events:
            pipe = client.pipeline()
            for event in events:
                pipe.xadd(key, {"data": json.dumps(event)}, maxlen=100_000, approximate=True)
            pipe.expire(key, STREAM_TTL)
            pipe.execute()
            final = events[-1]
            if is_final(final):
                return final
        now = time.monotonic()
        if now - last_check >= poll:
            last_check = now
            if not ticket.cancelled and client.exists(cancel_key(generation_id)):
                ticket.cancel()


def publish(client: redis.Redis, generation_id: str, event: PoolEvent) -> None:
    """One event (an error raised before a ticket existed) straight into the stream."""
    key = stream_key(generation_id)
    client.xadd(key, {"data": json.dumps(event)})
    client.expire(key, STREAM_TTL)


# --- web side --------------------------------------------------------------------------


class EventSource(Protocol):
    """Where the web process reads a generation's events; ``TicketSource`` or ``RedisSource``.

    ``read``/``aread`` return the events that arrived since the last read
    (waiting up to ``timeout`` seconds for one; empty when none came).
    ``RedisSource`` also has ``close``/``aclose`` for its connections.
    """

    def read(self, timeout: float) -> list[PoolEvent]: ...

    async def aread(self, timeout: float) -> list[PoolEvent]: ...

    def cancel(self) -> None: ...


class TicketSource:
    """Events of an in-process ticket."""

    def __init__(self, ticket: Ticket) -> None:
        self.ticket = ticket
        self._index = 0
        self._wake: asyncio.Event | None = None

    def read(self, timeout: float) -> list[PoolEvent]:
        events = self.ticket.events_since(self._index, timeout)
        self._index += len(events)
        return events

    async def aread(self, timeout: float) -> list[PoolEvent]:
        if self._wake is None:
            loop = asyncio.get_running_loop()
            wake = self._wake = asyncio.Event()

            def waker() -> None:  # called from the pool's thread
                loop.call_soon_threadsafe(wake.set)

            self.ticket.set_waker(waker)
        self._wake.clear()
        events = self.read(0)
        if not events:
            # ``asyncio.timeout``, not ``wait_for``: before Python 3.12, a ``wait_for`` cancelled just as its
            # wait completed returns the result and drops the cancellation (CPython gh-86296). With a model
            # fast enough to set the event between any two steps of the loop, a client that hung up was
            # then streamed to, unheard, until the generation's end.
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                return []
            events = self.read(0)
        return events

    def cancel(self) -> None:
        self.ticket.cancel()


T = TypeVar("T")


async def _cancellable(call: Awaitable[T]) -> T:
    """Await a redis-py call so that cancelling the caller always stops the caller, at once.

    When a client hangs up, the ASGI handler cancels the task streaming its
    answer, which is usually waiting here on a blocking ``XREAD``. Measured
    with the team shape (tests/e2e/test_team_generation.py): about one
    cancellation in seven delivered inside redis-py's read was absorbed there,
    the stream went on reading to the end, and the generation was never
    cancelled on the worker. Awaited through ``shield``, the cancellation is
    raised in this frame whatever the library does with it; the abandoned
    read is cancelled too, and its connection is not returned to the pool
    mid-reply (redis-py drops a connection whose read was interrupted).
    """
    inner = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(inner)
    except asyncio.CancelledError:
        inner.cancel()
        raise


class RedisSource:
    """Events of a generation running on an inference worker, read from its Redis stream.

    While the stream is silent it checks, every ``LIVENESS_CHECK_EVERY``
    seconds, that the worker that took the generation (or, before one has,
    any worker) still beats; a worker killed mid-stream ends the stream with
    a ``worker_lost`` error within about ``ALIVE_TTL`` seconds instead of
    leaving the client waiting for ``CAIRN_ASK_TIMEOUT``.
    """

    def __init__(self, redis_url: str, generation_id: str) -> None:
        self.redis_url = redis_url
        self.generation_id = generation_id
        self.key = stream_key(generation_id)
        self._last = "0-0"
        self._async: redis.asyncio.Redis | None = None
        self._checked = time.monotonic()

    def _check_due(self, events: list[PoolEvent]) -> bool:
        now = time.monotonic()
        if events or now - self._checked < LIVENESS_CHECK_EVERY:
            if events:
                self._checked = now
            return False
        self._checked = now
        return True

    def _client(self) -> redis.Redis:
        # The process's shared client: an ask does not open (and handshake) a connection of its own.
        return shared_client(self.redis_url)

    def _decode(self, reply: XReadResponse | None) -> list[PoolEvent]:
        events: list[PoolEvent] = []
        for _key, entries in cast(_XReadReply, reply) or []:
            for entry_id, fields in entries:
                self._last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                # What ``relay``/``publish`` wrote: a pool event as JSON.
                events.append(cast("PoolEvent", json.loads(fields[b"data"] if b"data" in fields else fields["data"])))
        return events

    def read(self, timeout: float) -> list[PoolEvent]:
        client = self._client()
        events = self._decode(client.xread({self.key: self._last}, block=max(1, int(timeout * 1000)), count=500))
        if not self._check_due(events):
            return events
        worker = client.get(worker_key(self.generation_id))
        return [] if inference_workers_alive(client, worker) else [WORKER_LOST]

    async def aread(self, timeout: float) -> list[PoolEvent]:
        if self._async is None:
            import redis.asyncio

            self._async = redis.asyncio.Redis.from_url(self.redis_url)
        reply = await _cancellable(self._async.xread({self.key: self._last}, block=max(1, int(timeout * 1000)),
                                                     count=500))
        events = self._decode(reply)
        if not self._check_due(events):
            return events
        worker = await _cancellable(self._async.get(worker_key(self.generation_id)))
        args: list[str | int] = [ALIVE_TTL] if worker is None else [ALIVE_TTL, _name(worker)]
        alive = await _cancellable(cast("Awaitable[int]", self._async.eval(_ALIVE, 1, ALIVE_KEY, *args)))
        return [] if alive else [WORKER_LOST]

    def cancel(self) -> None:
        self._client().set(cancel_key(self.generation_id), "1", ex=STREAM_TTL)

    def close(self) -> None:
        pass  # the shared client stays open for the next ask

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
