"""A hung-up client's stream stops at once, whatever the Redis client does with the cancellation.

The team shape's web process reads a generation's events with redis-py's
asyncio client (``RedisSource.aread``). When the client hangs up, the ASGI
handler cancels the task streaming the answer; about one cancellation in
seven that arrived inside redis-py's blocking read was absorbed there, the
stream read on to the end and the worker never heard of the hang-up
(tests/e2e/test_team_generation.py caught it once the tiny model stopped
ending its answers early). ``_cancellable`` raises the cancellation in the
caller's frame regardless.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from inference.transport import _cancellable


async def _absorbs_one_cancellation(done: list[str]) -> str:
    """A library call that swallows the first cancellation it is given and goes on waiting."""
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        done.append("absorbed")
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        done.append("inner cancelled")
        raise
    return "reply"


async def _stream(call) -> str:
    return await call


def test_a_cancelled_caller_stops_at_once_even_when_the_call_absorbs_the_cancellation():
    async def main() -> tuple[float, list[str], list[str]]:
        plain_log: list[str] = []
        plain = asyncio.create_task(_stream(_absorbs_one_cancellation(plain_log)))
        guarded_log: list[str] = []
        guarded = asyncio.create_task(_stream(_cancellable(_absorbs_one_cancellation(guarded_log))))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        guarded.cancel()
        with pytest.raises(asyncio.CancelledError):
            await guarded
        elapsed = time.monotonic() - started
        plain.cancel()  # without the guard the cancellation is lost: the task is still waiting
        await asyncio.sleep(0.05)
        still_running = not plain.done()
        plain.cancel()
        with pytest.raises(asyncio.CancelledError):
            await plain
        assert still_running
        await asyncio.sleep(0)  # let the abandoned call see its own cancellation
        return elapsed, guarded_log, plain_log

    elapsed, guarded_log, plain_log = asyncio.run(main())
    assert elapsed < 1.0
    # The abandoned call was told too (this one absorbed it, as redis-py sometimes does; its read then
    # ends by its own ``block`` timeout, at most a second).
    assert guarded_log[:1] == ["absorbed"] and plain_log[:1] == ["absorbed"]


def test_the_reply_passes_through():
    async def reply() -> str:
        await asyncio.sleep(0)
        return "events"

    assert asyncio.run(_cancellable(reply())) == "events"


def test_an_in_process_reader_cancelled_as_its_event_arrives_stops():
    """Personal shape: ``TicketSource.aread`` never drops a cancellation that meets an arriving event.

    Python 3.11's ``asyncio.wait_for`` returns the result when it is cancelled
    just after its wait completed, losing the cancellation (CPython gh-86296);
    with a fast model an event arrives between almost any two loop steps, and
    a client who hung up was streamed to, unheard, until the end (seen in CI).
    Every interleaving of "event arrives" and "cancel" within a few loop steps
    is tried; a read still running when cancelled must end with ``CancelledError``.
    """
    from inference.pool import Ticket
    from inference.transport import TicketSource
    from inference.types import GenerationRequest

    async def one(steps: int) -> str:
        ticket = Ticket(GenerationRequest(question="q", passages=()), None)
        source = TicketSource(ticket)
        read = asyncio.create_task(source.aread(30))
        for _ in range(3):
            await asyncio.sleep(0)  # the read is waiting for its wake-up now
        ticket.push({"event": "token", "text": "a"})  # schedules the wake-up, as the pool's thread does
        for _ in range(steps):
            await asyncio.sleep(0)
        if not read.cancel():
            return "finished"  # the read had already returned its event: nothing to cancel
        try:
            await read
        except asyncio.CancelledError:
            return "cancelled"
        return "dropped"

    async def main() -> list[str]:
        return [await one(steps) for steps in range(8)]

    outcomes = asyncio.run(main())
    assert "dropped" not in outcomes and outcomes[0] == "cancelled", outcomes
