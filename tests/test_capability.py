"""One suite for both caches of RCS capability answers: in memory for local mode, in Redis for the workers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from engine.sending.capability import CAPABILITY_TTL, CapabilityCache, MemoryCapabilityCache, RedisCapabilityCache
from tests.fixtures.campaigns import phones

CAPABLE, INCAPABLE, UNKNOWN = phones(3, 9_800_000_000)
ANSWERS = {CAPABLE: True, INCAPABLE: False}


@dataclass
class Caches:
    """Builds the caches of one backend."""

    #: A cache of `provider`'s answers kept `ttl` seconds; `namespace` tells one deployment's from another's.
    build: Callable[..., CapabilityCache]
    #: The shortest ttl the backend takes: in memory 0 (over by the time anyone asks), in Redis one second.
    shortest_ttl: int
    #: Whether `numbers`' answers are gone once the shortest ttl has passed: in memory, the cache no longer
    #: serves them; Redis drops expired keys itself, so each of them must be set to expire within that ttl.
    expire: Callable[[CapabilityCache, list[str]], Awaitable[bool]]


@pytest.fixture(params=["memory", "redis"])
def caches(request: pytest.FixtureRequest) -> Caches:
    if request.param == "memory":

        def in_memory(provider: str = "noxitel", ttl: float = CAPABILITY_TTL, namespace: str = "") -> CapabilityCache:
            return MemoryCapabilityCache(ttl)  # one per provider and process: nothing else to tell apart

        async def not_served(cache: CapabilityCache, numbers: list[str]) -> bool:
            return await cache.get_many(numbers) == {}

        return Caches(in_memory, 0, not_served)

    redis: Redis = request.getfixturevalue("redis")
    prefix: str = request.getfixturevalue("redis_prefix")

    def in_redis(provider: str = "noxitel", ttl: int = CAPABILITY_TTL, namespace: str = "") -> CapabilityCache:
        return RedisCapabilityCache(redis, provider, prefix=prefix + namespace, ttl=ttl)

    async def expiring(cache: CapabilityCache, numbers: list[str]) -> bool:
        keys = [key async for key in redis.scan_iter(match=prefix + "*")]
        left = [await redis.pttl(key) for key in keys]  # ms until Redis drops the key; -1 never, -2 gone already
        return len(keys) <= len(numbers) and all(ms == -2 or 0 < ms <= 1_000 for ms in left)

    return Caches(in_redis, 1, expiring)


async def test_numbers_never_put_are_absent(caches: Caches) -> None:
    cache = caches.build()
    assert await cache.get_many([CAPABLE, UNKNOWN]) == {}
    assert await cache.get_many([]) == {}


async def test_both_answers_come_back_as_put(caches: Caches) -> None:
    cache = caches.build()
    await cache.put_many(ANSWERS)
    assert await cache.get_many([CAPABLE, INCAPABLE, UNKNOWN]) == ANSWERS  # False is an answer, not a miss
    await cache.put_many({CAPABLE: False})  # the device changed
    assert await cache.get_many([CAPABLE]) == {CAPABLE: False}


async def test_answers_expire_after_the_ttl(caches: Caches) -> None:
    cache = caches.build(ttl=caches.shortest_ttl)
    await cache.put_many(ANSWERS)
    assert await caches.expire(cache, list(ANSWERS))


async def test_providers_and_deployments_keep_their_answers_apart(caches: Caches) -> None:
    noxitel, pixabits = caches.build("noxitel"), caches.build("pixabits")
    elsewhere = caches.build("noxitel", namespace="elsewhere:")
    await noxitel.put_many({CAPABLE: True})
    assert await pixabits.get_many([CAPABLE]) == {}
    assert await elsewhere.get_many([CAPABLE]) == {}
    await pixabits.put_many({CAPABLE: False})
    await elsewhere.put_many({CAPABLE: False})
    assert await noxitel.get_many([CAPABLE]) == {CAPABLE: True}
    assert await pixabits.get_many([CAPABLE]) == {CAPABLE: False}
