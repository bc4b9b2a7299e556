"""Daily message quotas (Pixabits Starter: 1,000 messages a day), reserved before a batch is sent.

A batch that does not fit what is left of today's quota is not sent at all; it
waits for the next day (the provider counts days in UTC). Reserving before the
call, rather than counting after, keeps two workers from both taking the last
room. With workers the count lives in Redis; in local mode it is read from the
database (messages submitted today through that provider).
"""

from __future__ import annotations

import abc
from datetime import UTC, datetime

from redis.asyncio import Redis
from sqlalchemy import Engine, func, select

from engine.store import models
from engine.windows import day_of


class DailyQuota(abc.ABC):
    def __init__(self, limit: int) -> None:
        self.limit = limit

    @abc.abstractmethod
    async def reserve(self, count: int, now: datetime) -> bool:
        """Take `count` messages of today's quota if they all fit; take nothing otherwise."""

    @abc.abstractmethod
    async def finish(self, count: int, now: datetime, sent: bool) -> None:
        """Close a reservation: its messages were sent (they count), or not (the room is given back)."""


_RESERVE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 172800)
return 1
"""


class RedisQuota(DailyQuota):
    """The count shared by every worker sending with the account."""

    def __init__(self, redis: Redis, account: str, limit: int, prefix: str = "campaign:") -> None:
        super().__init__(limit)
        self._redis = redis
        self._key = f"{prefix}quota:{account}:"
        self._reserve = redis.register_script(_RESERVE)

    async def reserve(self, count: int, now: datetime) -> bool:
        return bool(await self._reserve(keys=[self._key + day_of(now)], args=[count, self.limit]))

    async def finish(self, count: int, now: datetime, sent: bool) -> None:
        if not sent:
            await self._redis.decrby(self._key + day_of(now), count)


class DatabaseQuota(DailyQuota):
    """Local mode: what this database submitted through the provider today, plus reservations in flight."""

    def __init__(self, engine: Engine, provider: str, limit: int) -> None:
        super().__init__(limit)
        self._engine = engine
        self._provider = provider
        self._held = 0

    async def reserve(self, count: int, now: datetime) -> bool:
        message, batch = models.MESSAGES, models.BATCHES
        start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        with self._engine.connect() as connection:
            used = connection.execute(
                select(func.count())
                .select_from(message.join(batch, batch.c.id == message.c.batch_id))
                .where(batch.c.provider == self._provider, message.c.submitted_at >= start)
            ).scalar_one()
        if used + self._held + count > self.limit:
            return False
        self._held += count
        return True

    async def finish(self, count: int, now: datetime, sent: bool) -> None:
        # Sent messages are now counted by the database itself; either way the hold ends.
        self._held -= count
