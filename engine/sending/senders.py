"""The one way to build a `Sender`: the providers' clients with the throttle, quota and caches of each account.

Local mode and the workers send with the same `Sender`; they differ only in
where the account's shared state lives. Workers share it in Redis, so every
worker of an account draws on one rate limit, one daily quota and one cache of
RCS capability answers. Local mode keeps it in this process, and reads the
daily quota from the database.
"""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis
from sqlalchemy import Engine

from engine.accounts import api_key_of, notify_url, plan_of
from engine.providers.base import Provider
from engine.sending.capability import CapabilityCache, MemoryCapabilityCache, RedisCapabilityCache
from engine.sending.dispatch import Sender
from engine.sending.quota import DailyQuota, DatabaseQuota, RedisQuota
from engine.sending.throttle import MemoryThrottle, RedisThrottle, Throttle, account_id
from engine.settings import Settings


def make_sender(
    engine: Engine,
    settings: Settings,
    providers: Mapping[str, Provider],
    worker: str,
    redis: Redis | None = None,
) -> Sender:
    """A `Sender` for these clients: account state shared in `redis` (workers), or kept in this process."""
    names = list(providers)
    plans = {name: plan_of(name, settings) for name in names}
    accounts = {name: account_id(name, api_key_of(name, settings)) for name in names}
    limits = {name: plan.daily_messages for name, plan in plans.items() if plan.daily_messages}
    throttles: dict[str, Throttle]
    quotas: dict[str, DailyQuota]
    caches: dict[str, CapabilityCache]
    if redis is None:
        throttles = {name: MemoryThrottle.for_account(accounts[name], plans[name]) for name in names}
        quotas = {name: DatabaseQuota(engine, name, limit) for name, limit in limits.items()}
        caches = {name: MemoryCapabilityCache() for name in names}
    else:
        prefix = settings.broker_prefix
        throttles = {name: RedisThrottle(redis, accounts[name], plans[name], prefix=prefix) for name in names}
        quotas = {name: RedisQuota(redis, accounts[name], limit, prefix) for name, limit in limits.items()}
        caches = {name: RedisCapabilityCache(redis, name, prefix) for name in names}
    return Sender(
        engine,
        dict(providers),
        throttles,
        worker=worker,
        lease_seconds=settings.lease_seconds,
        notify_urls={name: notify_url(name, settings) for name in names},
        quotas=quotas,
        capability_caches=caches,
        rcs_fallback=settings.rcs_fallback,
    )
