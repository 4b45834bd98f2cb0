"""Request rate limits on the API (``/api/v1/``, ``/v1/``): ``CAIRN_RATE_LIMIT`` requests per window.

Each API key has its own budget; a request signed in otherwise (session,
IdP token, personal mode) counts against its user.  Fixed windows: the
count of a bucket restarts at each window boundary, and a refused request
is told, in ``Retry-After``, how long until then.

Where the counts live: Redis in the team shape (``CAIRN_REDIS_URL``), so
every web process shares them; in-process otherwise (personal mode has one
web process).  If Redis cannot be reached the request is let through and a
warning is logged (at most once a minute): a rate limit protects capacity,
and refusing every request because the counter is away would turn a Redis
outage into a total one (the paths that need Redis fail on their own, 503).
After a failure Redis is left alone for a few seconds, so requests do not
each wait for a connection timeout meanwhile.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from rest_framework.throttling import BaseThrottle

if TYPE_CHECKING:
    import redis
    from rest_framework.request import Request
    from rest_framework.views import APIView

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Rate:
    requests: int
    seconds: int


class Counter(Protocol):
    def hit(self, bucket: str, rate: Rate) -> float | None:
        """Count one request; None if allowed, else the seconds until the bucket's window ends."""


def _window(rate: Rate, now: float) -> tuple[int, float]:
    index = int(now // rate.seconds)
    return index, (index + 1) * rate.seconds - now


class LocalCounter:
    """In-process fixed windows (one web process: personal mode, tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = {}  # bucket → (window index, count)

    def hit(self, bucket: str, rate: Rate) -> float | None:
        index, left = _window(rate, time.time())
        with self._lock:
            seen_index, count = self._counts.get(bucket, (index, 0))
            count = count + 1 if seen_index == index else 1
            if len(self._counts) > 100_000:  # old windows of idle buckets
                self._counts = {k: v for k, v in self._counts.items() if v[0] == index}
            self._counts[bucket] = (index, count)
        return None if count <= rate.requests else left


class RedisCounter:
    """Fixed windows in Redis, shared by every web process: ``INCR`` of one key per bucket and window."""

    # After a failure, Redis is not asked again for this long: requests do not each wait for a timeout.
    RETRY_AFTER_FAILURE = 5.0

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._warned = 0.0
        self._down_until = 0.0

    def hit(self, bucket: str, rate: Rate) -> float | None:
        import redis

        if time.monotonic() < self._down_until:
            return None
        index, left = _window(rate, time.time())
        key = f"cairn:ratelimit:{bucket}:{rate.seconds}:{index}"
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, rate.seconds + 5)
            count = int(pipe.execute()[0])
        except redis.exceptions.RedisError as exc:
            now = time.monotonic()
            self._down_until = now + self.RETRY_AFTER_FAILURE
            if now - self._warned > 60:
                self._warned = now
                log.warning("rate limit not applied: Redis cannot be reached (%s); letting requests through", exc)
            return None
        return None if count <= rate.requests else left


@functools.cache
def _rate() -> Rate | None:
    # Validated at start-up (config/env.py ``env_rate``): (requests, seconds) or None.
    limit = settings.CAIRN_RATE_LIMIT
    return None if limit is None else Rate(*limit)


_counter_lock = threading.Lock()
_counter: Counter | None = None


def counter() -> Counter:
    """The process's counter: Redis-backed when Cairn has a Redis (team shape), in-process otherwise."""
    global _counter
    with _counter_lock:
        if _counter is None:
            if settings.CAIRN_REDIS_URL:
                import redis

                _counter = RedisCounter(redis.Redis.from_url(settings.CAIRN_REDIS_URL, socket_timeout=0.5,
                                                             socket_connect_timeout=0.5))
            else:
                _counter = LocalCounter()
        return _counter


def reset() -> None:
    """Forget the counter and the parsed rate so changed settings apply (tests)."""
    global _counter
    with _counter_lock:
        _counter = None
    _rate.cache_clear()


def bucket_of(request: Request) -> str | None:
    """Whose budget a request spends: its API key's, else its user's; None for an anonymous request."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    from access.models import ApiKey

    key = getattr(request, "auth", None)
    if isinstance(key, ApiKey):
        return f"key:{key.pk}"
    return f"user:{user.pk}"


class ApiRateThrottle(BaseThrottle):
    """DRF throttle for every API view: 429 with ``Retry-After`` once a bucket's window is spent."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Request, view: APIView) -> bool:
        rate = _rate()
        bucket = bucket_of(request)
        if rate is None or bucket is None:
            return True
        self._wait = counter().hit(bucket, rate)
        return self._wait is None

    def wait(self) -> float | None:
        return None if self._wait is None else max(1, math.ceil(self._wait))

