"""One suite for both throttles: the Redis one shared by workers and the in-process one of local mode."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from engine.errors import InvalidRequest
from engine.providers.base import OutboundMessage, SmsBatch
from engine.providers.limits import RatePlan, noxitel_plan
from engine.providers.noxitel import NoxitelClient
from engine.sending.throttle import MemoryThrottle, RedisThrottle, Throttle, account_id
from tests.fixtures.sandbox import Sandbox

#: Slow enough that a test's few dozen Redis round trips all fall in one emission interval
#: (0.2 s), even on a loaded machine.
PLAN = RatePlan("test", rate=5, burst=20)


@pytest.fixture(params=["memory", "redis"])
def make_throttle(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Builds throttles for one account; two built with the same account share one bucket."""
    account = f"test:{uuid.uuid4().hex}"
    if request.param == "redis":
        redis: Redis = request.getfixturevalue("redis")
        prefix: str = request.getfixturevalue("redis_prefix")

    def build(plan: RatePlan = PLAN, headroom: float = 1.0) -> Throttle:
        if request.param == "memory":
            return MemoryThrottle.for_account(account, plan, headroom)
        return RedisThrottle(redis, account, plan, prefix=prefix, headroom=headroom)

    return build


async def test_the_burst_is_granted_at_once_then_the_rate(make_throttle) -> None:  # type: ignore[no-untyped-def]
    throttle = make_throttle()
    grants = [await throttle.try_acquire() for _ in range(20)]
    assert grants == [0.0] * 20
    wait = await throttle.try_acquire()
    assert 0 < wait <= 1 / 5


async def test_every_sender_of_an_account_shares_one_bucket(make_throttle) -> None:  # type: ignore[no-untyped-def]
    first, second = make_throttle(), make_throttle()
    for _ in range(10):
        assert await first.try_acquire() == 0
        assert await second.try_acquire() == 0
    assert await first.try_acquire() > 0
    assert await second.try_acquire() > 0


async def test_a_hold_stops_every_sender_until_it_passes(make_throttle) -> None:  # type: ignore[no-untyped-def]
    first, second = make_throttle(), make_throttle()
    await first.hold(2.0)
    assert 1.5 < await second.try_acquire() <= 2.0
    await second.hold(0.5)  # a shorter hold never shortens a longer one
    assert await first.try_acquire() > 1.0


async def test_headroom_keeps_under_the_plan(make_throttle) -> None:  # type: ignore[no-untyped-def]
    throttle = make_throttle(RatePlan("p", rate=5, burst=20), headroom=0.9)
    assert (throttle.rate, throttle.burst) == (4.5, 18)
    assert [await throttle.try_acquire() for _ in range(19)].count(0.0) == 18


async def test_more_than_a_burst_at_once_is_refused(make_throttle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest, match="burst"):
        await make_throttle().acquire(21)


async def test_throttled_callers_get_no_429_from_the_provider(  # type: ignore[no-untyped-def]
    make_throttle, sandbox: Sandbox
) -> None:
    sandbox.configure(noxitel_rate=40)
    key = sandbox.account()
    # 20% under the plan: on a loaded machine the event loop can hold sends back and let them go together.
    throttle = make_throttle(noxitel_plan(40), headroom=0.8)

    async def send(client: NoxitelClient, i: int) -> None:
        await throttle.acquire()
        await client.send_sms(SmsBatch("NOXITL", [OutboundMessage(f"+9198{i:08d}", "Hi")]))

    async with NoxitelClient(key, sandbox.noxitel_url) as client:
        await asyncio.gather(*(send(client, i) for i in range(100)))
    stats = sandbox.endpoint("POST /api/v2/sms")
    assert stats["statuses"] == {"200": 100}
    assert stats["rate_limited"] == 0
    assert stats["max_rate_1s"] <= 40 + 40


def test_account_ids_never_contain_the_key() -> None:
    assert "secret-key-123" not in account_id("pixabits", "secret-key-123")
    assert account_id("pixabits", "k1") != account_id("pixabits", "k2")
