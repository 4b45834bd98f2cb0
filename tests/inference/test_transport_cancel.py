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
