"""One suite for both daily quotas: the Redis count the workers share, and local mode's count of the messages the
database shows submitted through the provider today (plus the reservations in flight).

The day is the provider's: UTC. Every moment is given explicitly, so a test reaches tomorrow without waiting.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import Engine

from engine.sending.quota import DailyQuota, DatabaseQuota, RedisQuota
from tests.fixtures.campaigns import mark_sent, plan_campaign
from tests.fixtures.clock import IST

LIMIT = 10
#: Late on a UTC day, and the first second of the next.
LATE = datetime(2026, 11, 24, 23, 59, 59, tzinfo=UTC)
MIDNIGHT = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)

pytestmark = pytest.mark.parametrize(
    ("backend", "database_url"),
    [
        pytest.param("redis", "sqlite", id="redis"),
        pytest.param("database", "sqlite", id="database-sqlite"),
        pytest.param("database", "postgresql", id="database-postgresql"),
    ],
    indirect=["database_url"],  # the database backend on each database; Redis needs none (its URL goes unused)
)


@dataclass
class Quotas:
    """Builds the quotas of one backend; `sent` is what sending does to the count besides the quota's own calls."""

    #: The quota of an account (a provider's, in local mode) as one sender holds it.
    build: Callable[[str], DailyQuota]
    #: Another sender's view of the same account's quota (another worker; in local mode, the process's one quota).
    beside: Callable[[DailyQuota, str], DailyQuota]
    #: `count` messages went out through the account at `moment` (the database counts them from then on).
    sent: Callable[[str, int, datetime], None]


@pytest.fixture
def quotas(request: pytest.FixtureRequest, backend: str, database_url: str, tmp_path: Path) -> Quotas:
    if backend == "redis":
        redis: Redis = request.getfixturevalue("redis")  # a pool: concurrent calls go on connections of their own
        prefix: str = request.getfixturevalue("redis_prefix")
        accounts = {name: f"{name}:{uuid.uuid4().hex[:16]}" for name in ("pixabits", "noxitel")}
        return Quotas(
            build=lambda name: RedisQuota(redis, accounts[name], LIMIT, prefix=prefix),
            beside=lambda _, name: RedisQuota(redis, accounts[name], LIMIT, prefix=prefix),  # as another worker
            sent=lambda name, count, moment: None,  # the reservation is the count
        )
    database: Engine = request.getfixturevalue("database")

    def sent(name: str, count: int, moment: datetime) -> None:
        campaign_id = plan_campaign(database, tmp_path, count, name, start=False)
        mark_sent(database, campaign_id, moment)

    return Quotas(
        build=lambda name: DatabaseQuota(database, name, LIMIT),
        beside=lambda quota, _: quota,  # local mode sends a campaign's batches concurrently through one quota
        sent=sent,
    )


async def send(quotas: Quotas, quota: DailyQuota, name: str, count: int, moment: datetime) -> bool:
    """What the sender does with a batch: reserve, send, and close the reservation as sent."""
    if not await quota.reserve(count, moment):
        return False
    quotas.sent(name, count, moment)
    await quota.finish(count, moment, sent=True)
    return True


async def test_reservations_within_the_limit_are_taken_up_to_it(quotas: Quotas) -> None:
    quota = quotas.build("pixabits")
    assert await quota.reserve(4, LATE)
    assert await quota.reserve(LIMIT - 4, LATE)
    assert not await quota.reserve(1, LATE)


async def test_a_reservation_that_does_not_fit_takes_nothing(quotas: Quotas) -> None:
    quota = quotas.build("pixabits")
    assert await quota.reserve(7, LATE)
    assert not await quota.reserve(4, LATE)  # 11 of 10
    assert not await quota.reserve(LIMIT + 1, MIDNIGHT)  # never fits a day
    assert await quota.reserve(3, LATE)  # the refused 4 took nothing


async def test_unsent_messages_give_their_room_back_and_sent_ones_keep_it(quotas: Quotas) -> None:
    quota = quotas.build("pixabits")
    assert await send(quotas, quota, "pixabits", 6, LATE)
    assert await quota.reserve(4, LATE)
    await quota.finish(4, LATE, sent=False)  # the call failed before the provider took them
    assert await quota.reserve(4, LATE)
    assert not await quota.reserve(1, LATE)  # the 6 sent still count


async def test_a_new_utc_day_starts_empty(quotas: Quotas) -> None:
    quota = quotas.build("pixabits")
    assert await send(quotas, quota, "pixabits", LIMIT, LATE)
    assert not await quota.reserve(1, LATE)
    india_tomorrow = datetime(2026, 11, 25, 5, 0, tzinfo=IST)  # already the 25th in India, still the 24th in UTC
    assert not await quota.reserve(1, india_tomorrow)
    assert await quota.reserve(LIMIT, MIDNIGHT)
    assert not await quota.reserve(1, MIDNIGHT + timedelta(hours=23))


async def test_two_reservers_racing_for_the_last_room_one_wins(quotas: Quotas) -> None:
    first = quotas.build("pixabits")
    second = quotas.beside(first, "pixabits")
    assert await send(quotas, first, "pixabits", LIMIT - 3, LATE)
    won = await asyncio.gather(first.reserve(3, LATE), second.reserve(3, LATE))
    assert sorted(won) == [False, True]
    assert not await second.reserve(1, LATE) and not await first.reserve(1, LATE)


async def test_each_account_has_its_own_count(quotas: Quotas) -> None:
    pixabits, noxitel = quotas.build("pixabits"), quotas.build("noxitel")
    assert await send(quotas, pixabits, "pixabits", LIMIT, LATE)
    assert await noxitel.reserve(LIMIT, LATE)
    assert not await pixabits.reserve(1, LATE)
