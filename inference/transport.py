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
import json
import re
import time
from typing import Any

from inference.pool import FINAL_EVENTS, Ticket

STREAM_TTL = 900  # seconds a finished (or abandoned) event stream stays in Redis
_ID = re.compile(r"^[0-9a-f]{32}$")


def valid_generation_id(value: str) -> bool:
    return bool(_ID.match(value))


def stream_key(generation_id: str) -> str:
    return f"cairn:gen:{generation_id}:events"


def cancel_key(generation_id: str) -> str:
    return f"cairn:gen:{generation_id}:cancel"


# --- worker side ---------------------------------------------------------------------


def relay(ticket: Ticket, client: Any, generation_id: str, *, poll: float = 0.1) -> dict[str, Any]:
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
            if final["event"] in FINAL_EVENTS:
                return final
        now = time.monotonic()
        if now - last_check >= poll:
            last_check = now
            if not ticket.cancelled and client.exists(cancel_key(generation_id)):
                ticket.cancel()


def publish(client: Any, generation_id: str, event: dict[str, Any]) -> None:
    """One event (an error raised before a ticket existed) straight into the stream."""
    key = stream_key(generation_id)
    client.xadd(key, {"data": json.dumps(event)})
    client.expire(key, STREAM_TTL)


# --- web side --------------------------------------------------------------------------


class TicketSource:
    """Events of an in-process ticket."""

    def __init__(self, ticket: Ticket) -> None:
        self.ticket = ticket
        self._index = 0
        self._wake: asyncio.Event | None = None

    def read(self, timeout: float) -> list[dict[str, Any]]:
        events = self.ticket.events_since(self._index, timeout)
        self._index += len(events)
        return events

    async def aread(self, timeout: float) -> list[dict[str, Any]]:
        if self._wake is None:
            loop = asyncio.get_running_loop()
            wake = self._wake = asyncio.Event()
            self.ticket.set_waker(lambda: loop.call_soon_threadsafe(wake.set))
        self._wake.clear()
        events = self.read(0)
        if not events:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return []
            events = self.read(0)
        return events

    def cancel(self) -> None:
        self.ticket.cancel()


class RedisSource:
    """Events of a generation running on an inference worker, read from its Redis stream."""

    def __init__(self, redis_url: str, generation_id: str) -> None:
        self.redis_url = redis_url
        self.generation_id = generation_id
        self.key = stream_key(generation_id)
        self._last = "0-0"
        self._sync: Any = None
        self._async: Any = None

    def _client(self) -> Any:
        if self._sync is None:
            import redis

            self._sync = redis.Redis.from_url(self.redis_url)
        return self._sync

    def _decode(self, reply: Any) -> list[dict[str, Any]]:
        events = []
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                self._last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                events.append(json.loads(fields[b"data"] if b"data" in fields else fields["data"]))
        return events

    def read(self, timeout: float) -> list[dict[str, Any]]:
        reply = self._client().xread({self.key: self._last}, block=max(1, int(timeout * 1000)), count=500)
        return self._decode(reply)

    async def aread(self, timeout: float) -> list[dict[str, Any]]:
        if self._async is None:
            import redis.asyncio

            self._async = redis.asyncio.Redis.from_url(self.redis_url)
        reply = await self._async.xread({self.key: self._last}, block=max(1, int(timeout * 1000)), count=500)
        return self._decode(reply)

    def cancel(self) -> None:
        self._client().set(cancel_key(self.generation_id), "1", ex=STREAM_TTL)

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
