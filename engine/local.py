"""Local mode: the same dispatch, run in this process with asyncio instead of Celery workers.

Several batches are in flight at once (the provider call is the slow part and
the throttle keeps the account within its plan); the database holds the same
states a worker would write, so a campaign started locally can be paused,
resumed or inspected the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from engine.campaigns import pause, status
from engine.dispatch import Sender
from engine.plans import PIXABITS_PLANS, RatePlan, noxitel_plan
from engine.providers import open_provider
from engine.providers.base import Provider
from engine.quota import DatabaseQuota
from engine.recovery import due_batches, sweep
from engine.settings import Settings
from engine.throttle import MemoryThrottle, account_id

Progress = Callable[[dict[str, int]], None]


@dataclass(frozen=True)
class Outcome:
    state: str
    reason: str | None
    counts: dict[str, int]


def plan_of(provider: str, settings: Settings) -> RatePlan:
    if provider == "pixabits":
        return PIXABITS_PLANS[settings.pixabits_plan]
    return noxitel_plan(settings.noxitel_rate)


def api_key_of(provider: str, settings: Settings) -> str:
    key = settings.pixabits_api_key if provider == "pixabits" else settings.noxitel_api_key
    return key.get_secret_value()


@contextlib.asynccontextmanager
async def local_sender(engine: Engine, settings: Settings, provider_name: str) -> AsyncIterator[Sender]:
    """A `Sender` with this process's provider client (the embedded sandbox if so configured) and throttle."""
    async with open_provider(provider_name, settings) as provider:
        yield _sender(engine, settings, provider)


def _sender(engine: Engine, settings: Settings, provider: Provider) -> Sender:
    name = provider.name
    plan = plan_of(name, settings)
    throttle = MemoryThrottle.for_account(account_id(name, api_key_of(name, settings)), plan)
    quotas = {name: DatabaseQuota(engine, name, plan.daily_messages)} if plan.daily_messages else {}
    return Sender(
        engine,
        {name: provider},
        {name: throttle},
        worker=f"local:{socket.gethostname()}:{os.getpid()}",
        notify_url=notify_url(settings),
        quotas=quotas,
        lease_seconds=settings.lease_seconds,
        rcs_fallback=settings.rcs_fallback,
    )


def notify_url(settings: Settings) -> str | None:
    """Where Noxitel should push delivery reports: the webhook receiver, if providers can reach it."""
    return f"{settings.public_url.rstrip('/')}/webhooks/noxitel" if settings.public_url else None


async def send_campaign(
    engine: Engine,
    sender: Sender,
    campaign_id: int,
    concurrency: int = 4,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
) -> Outcome:
    """Send every due batch of a running campaign, `concurrency` at a time.

    It stops early when the campaign is paused elsewhere (claims fail), or when
    `stop` is set (Ctrl-C): batches in flight finish, none is started, and the
    campaign is paused so that a resume sends exactly what is left.
    """
    semaphore = asyncio.Semaphore(concurrency)

    async def one(batch_id: int) -> None:
        async with semaphore:
            if stop is not None and stop.is_set():
                return
            await sender.send_batch(batch_id)
            if progress is not None:
                progress(status(engine, campaign_id).counts)

    sweep(engine)
    due = [batch_id for batch_id, _ in due_batches(engine, campaign_id=campaign_id)]
    await asyncio.gather(*(one(batch_id) for batch_id in due))
    if stop is not None and stop.is_set():
        pause(engine, campaign_id, f"interrupted; `campaign resume {campaign_id}` continues where it stopped")
    final = status(engine, campaign_id)
    return Outcome(final.state, final.reason, final.counts)
