"""RCS capability, cached, and the split of an RCS batch into devices that take RCS and those that get SMS.

When the engine (not the provider) handles the SMS fallback, it asks the
provider whether each device takes RCS before sending. Answers are kept for 24
hours, as the provider's own cache does, in Redis when workers share one and
in memory in local mode; each lookup that misses is one throttled call.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Sequence

from redis.asyncio import Redis

from engine.errors import CampaignError
from engine.providers.base import Provider
from engine.providers.errors import OutcomeUnknown, RateLimited, TransientError
from engine.sending.throttle import Throttle

CAPABILITY_TTL = 24 * 3600
#: Capability calls in flight at once for one batch (the throttle still sets the pace).
LOOKUP_CONCURRENCY = 32
LOOKUP_ATTEMPTS = 3


class CapabilityCache(abc.ABC):
    @abc.abstractmethod
    async def get_many(self, numbers: Sequence[str]) -> dict[str, bool]:
        """The cached answers among `numbers` (numbers not cached are absent)."""

    @abc.abstractmethod
    async def put_many(self, answers: dict[str, bool]) -> None: ...


class MemoryCapabilityCache(CapabilityCache):
    def __init__(self, ttl: float = CAPABILITY_TTL) -> None:
        self._ttl = ttl
        self._answers: dict[str, tuple[bool, float]] = {}

    async def get_many(self, numbers: Sequence[str]) -> dict[str, bool]:
        now = time.monotonic()
        found = {}
        for number in numbers:
            entry = self._answers.get(number)
            if entry is not None and entry[1] > now:
                found[number] = entry[0]
        return found

    async def put_many(self, answers: dict[str, bool]) -> None:
        expires = time.monotonic() + self._ttl
        self._answers.update({number: (enabled, expires) for number, enabled in answers.items()})


class RedisCapabilityCache(CapabilityCache):
    def __init__(self, redis: Redis, provider: str, prefix: str = "campaign:", ttl: int = CAPABILITY_TTL) -> None:
        self._redis = redis
        self._prefix = f"{prefix}rcs-capability:{provider}:"
        self._ttl = ttl

    async def get_many(self, numbers: Sequence[str]) -> dict[str, bool]:
        if not numbers:
            return {}
        values = await self._redis.mget([self._prefix + n for n in numbers])
        return {n: v == b"1" for n, v in zip(numbers, values, strict=True) if v is not None}

    async def put_many(self, answers: dict[str, bool]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for number, enabled in answers.items():
                pipe.set(self._prefix + number, b"1" if enabled else b"0", ex=self._ttl)
            await pipe.execute()


async def capabilities(
    provider: Provider,
    throttle: Throttle,
    cache: CapabilityCache,
    numbers: Sequence[str],
    agent_id: int | None,
    max_wait: float | None = None,
) -> dict[str, bool]:
    """Whether each number takes RCS: from the cache, else asked of the provider under its throttle.

    A lookup only reads, so any failure (even a lost answer) is retried a few
    times; if one still fails the others are stopped and the error goes up.
    """
    known = await cache.get_many(numbers)
    missing = [n for n in numbers if n not in known]
    semaphore = asyncio.Semaphore(LOOKUP_CONCURRENCY)
    fresh: dict[str, bool] = {}

    async def ask(number: str) -> None:
        async with semaphore:
            for attempt in range(LOOKUP_ATTEMPTS):
                await throttle.acquire(max_wait=max_wait)
                try:
                    fresh[number] = (await provider.rcs_capability(number, agent_id)).enabled
                    return
                except RateLimited as exc:
                    await throttle.hold(exc.retry_after)
                except (TransientError, OutcomeUnknown):
                    if attempt + 1 == LOOKUP_ATTEMPTS:
                        raise
                    await asyncio.sleep(0.5 * 2**attempt)

    try:
        async with asyncio.TaskGroup() as group:
            for number in missing:
                group.create_task(ask(number))
    except* CampaignError as failures:  # provider errors, and a request the client refuses (no agent id)
        raise failures.exceptions[0] from None
    finally:
        await cache.put_many(fresh)
    return {**known, **fresh}
