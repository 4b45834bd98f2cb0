"""Admission control for generation: a bounded pool and a per-user concurrency limit.

Checked by the web process *before* a request is queued, so a refusal is an
immediate, clear HTTP answer (429 for the user's own limit, 503 when the
whole pool is full) rather than a long wait. Two implementations, one
contract:

* ``LocalAdmission`` — counters in this process (personal shape);
* ``RedisAdmission`` — two sorted sets in Redis shared by every web process
  (team shape). Each slot is scored with its expiry time, so a web process
  that dies holding slots leaks them only until ``lease`` seconds pass.

Invariant: ``acquire`` either raises ``AdmissionRefused`` or takes exactly one
slot, released by ``release`` with the same ``slot`` id (idempotent).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the personal shape never imports redis
    import redis


class AdmissionRefused(Exception):
    """``reason`` is ``user`` (429: this user has too many generations running) or ``pool`` (503)."""

    def __init__(self, reason: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return 429 if self.reason == "user" else 503


def _user_refused(limit: int) -> AdmissionRefused:
    return AdmissionRefused(
        "user", f"You already have {limit} answers being generated; wait for one to finish.", retry_after=2
    )


def _pool_refused(limit: int) -> AdmissionRefused:
    return AdmissionRefused(
        "pool", f"The answer service is at capacity ({limit} answers in progress); try again shortly.", retry_after=5
    )


class Admission(Protocol):
    """The contract both implementations keep; see the module docstring."""

    def acquire(self, user: str, slot: str) -> None: ...

    def release(self, user: str, slot: str) -> None: ...

    def in_flight(self) -> int: ...


class LocalAdmission:
    def __init__(self, *, pool_limit: int, user_limit: int) -> None:
        self.pool_limit = pool_limit
        self.user_limit = user_limit
        self._lock = threading.Lock()
        self._slots: dict[str, str] = {}  # slot → user

    def acquire(self, user: str, slot: str) -> None:
        with self._lock:
            if sum(1 for u in self._slots.values() if u == user) >= self.user_limit:
                raise _user_refused(self.user_limit)
            if len(self._slots) >= self.pool_limit:
                raise _pool_refused(self.pool_limit)
            self._slots[slot] = user

    def release(self, user: str, slot: str) -> None:
        with self._lock:
            self._slots.pop(slot, None)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._slots)


# KEYS: pool zset, user zset. ARGV: now, expiry, slot, pool limit, user limit.
# Returns 0 (admitted), 1 (user limit), 2 (pool full).
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 2 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[2]) - tonumber(ARGV[1])) + 60)
return 0
"""


class RedisAdmission:
    def __init__(self, client: redis.Redis, *, pool_limit: int, user_limit: int, lease: float,
                 prefix: str = "cairn:admission") -> None:
        self.client = client
        self.pool_limit = pool_limit
        self.user_limit = user_limit
        self.lease = lease
        self.prefix = prefix
        self._script = client.register_script(_ACQUIRE)

    def _keys(self, user: str) -> list[str]:
        return [f"{self.prefix}:pool", f"{self.prefix}:user:{user}"]

    def acquire(self, user: str, slot: str) -> None:
        now = time.time()
        result = int(self._script(keys=self._keys(user), args=[now, now + self.lease, slot,
                                                               self.pool_limit, self.user_limit]))
        if result == 1:
            raise _user_refused(self.user_limit)
        if result == 2:
            raise _pool_refused(self.pool_limit)

    def release(self, user: str, slot: str) -> None:
        pipe = self.client.pipeline()
        for key in self._keys(user):
            pipe.zrem(key, slot)
        pipe.execute()

    def in_flight(self) -> int:
        return int(self.client.zcount(f"{self.prefix}:pool", time.time(), "+inf"))
