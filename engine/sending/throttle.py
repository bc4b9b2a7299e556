"""Request throttling per provider account, shared by everyone who sends with that key.

The provider limits requests per API key, not per worker, so every process
that sends with a key draws from one bucket: a Redis Lua script (GCRA) when
workers share a broker, an in-process bucket in local mode. Both implement the
same `Throttle` and pass the same tests.

GCRA keeps one number per key, the theoretical arrival time (TAT): a request
is allowed while it would not put the TAT more than `burst` emission intervals
ahead of now, which is a token bucket of `burst` tokens refilled at `rate`.
A provider's 429 `Retry-After` becomes a hold: nobody using that key sends
until it has passed.

The engine stays a little under the published limits (`HEADROOM`): the
provider's clock starts when a request arrives, not when it was sent, and a
request that left exactly on time can still arrive early after a slower one.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import time
from typing import ClassVar

from redis.asyncio import Redis

from engine.errors import InvalidRequest
from engine.providers.errors import RateLimited
from engine.providers.limits import RatePlan

HEADROOM = 0.9


def account_id(provider: str, api_key: str) -> str:
    """A stable name for a provider account that does not reveal its key (keys end up in Redis key names)."""
    return f"{provider}:{hashlib.sha256(api_key.encode()).hexdigest()[:16]}"


class Throttle(abc.ABC):
    """Admits requests for one provider account at no more than its plan's rate and burst."""

    def __init__(self, plan: RatePlan, headroom: float = HEADROOM) -> None:
        self.rate = plan.rate * headroom
        self.burst = max(1, int(plan.burst * headroom))
        self.emission = 1.0 / self.rate

    async def acquire(self, requests: int = 1, max_wait: float | None = None) -> None:
        """Wait until `requests` calls may be made now.

        A wait longer than `max_wait` (a provider's long `Retry-After` holding
        the account) raises `RateLimited` instead: the caller should put its work
        aside rather than sit on it for that long.
        """
        if requests > self.burst:
            raise InvalidRequest(f"{requests} calls at once can never fit a burst of {self.burst}")
        while (wait := await self.try_acquire(requests)) > 0:
            if max_wait is not None and wait > max_wait:
                raise RateLimited("throttle", f"the account is held for {wait:.0f} s", None, wait)
            await asyncio.sleep(wait)

    @abc.abstractmethod
    async def try_acquire(self, requests: int = 1) -> float:
        """Take `requests` calls if allowed now and return 0; else take nothing and return the seconds to wait."""

    @abc.abstractmethod
    async def hold(self, seconds: float) -> None:
        """Stop everyone using this account for `seconds` (the provider's `Retry-After`)."""


class MemoryThrottle(Throttle):
    """The bucket for local mode: one per account in this process."""

    _registry: ClassVar[dict[tuple[str, float, int, float], MemoryThrottle]] = {}

    def __init__(self, plan: RatePlan, headroom: float = HEADROOM) -> None:
        super().__init__(plan, headroom)
        self._tat = 0.0
        self._held_until = 0.0

    @classmethod
    def for_account(cls, account: str, plan: RatePlan, headroom: float = HEADROOM) -> MemoryThrottle:
        """The process's one bucket for `account`, so every sender in local mode shares it."""
        key = (account, plan.rate, plan.burst, headroom)
        found = cls._registry.get(key)
        if found is None:
            found = cls._registry[key] = cls(plan, headroom)
        return found

    async def try_acquire(self, requests: int = 1) -> float:
        now = time.monotonic()
        if self._held_until > now:
            return self._held_until - now
        tat = max(self._tat, now)
        new_tat = tat + self.emission * requests
        allow_at = new_tat - self.emission * self.burst
        if allow_at > now:
            return allow_at - now
        self._tat = new_tat
        return 0.0

    async def hold(self, seconds: float) -> None:
        self._held_until = max(self._held_until, time.monotonic() + seconds)


# Times are microseconds from Redis's own clock, so workers on different hosts agree.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
if held > now then return held - now end
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + emission * tonumber(ARGV[3])
local allow_at = new_tat - tolerance
if allow_at > now then return math.ceil(allow_at - now) end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
"""

_HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[1])
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > held then
  redis.call('SET', KEYS[1], string.format('%.0f', untl), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return 0
"""


class RedisThrottle(Throttle):
    """The bucket shared by every worker through Redis; one Lua call per admission, atomic."""

    def __init__(
        self, redis: Redis, account: str, plan: RatePlan, prefix: str = "campaign:", headroom: float = HEADROOM
    ) -> None:
        super().__init__(plan, headroom)
        self._redis = redis
        self._tat_key = f"{prefix}throttle:{account}:tat"
        self._hold_key = f"{prefix}throttle:{account}:hold"
        self._acquire = redis.register_script(_ACQUIRE)
        self._hold = redis.register_script(_HOLD)

    async def try_acquire(self, requests: int = 1) -> float:
        emission_us = self.emission * 1_000_000
        wait_us = await self._acquire(
            keys=[self._tat_key, self._hold_key], args=[emission_us, emission_us * self.burst, requests]
        )
        return int(wait_us) / 1_000_000

    async def hold(self, seconds: float) -> None:
        await self._hold(keys=[self._hold_key], args=[int(seconds * 1_000_000)])
