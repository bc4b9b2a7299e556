"""Local mode: the same dispatch, run in this process with asyncio instead of Celery workers.

Several batches are in flight at once (the provider call is the slow part and
the throttle keeps the account within its plan); the database holds the same
states a worker would write, so a campaign started locally can be paused,
resumed or inspected the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from aiohttp import web
from sqlalchemy import Engine, func, select

from engine.accounts import api_key_of, make_provider, notify_url, open_provider, plan_of, uses_sandbox
from engine.campaigns.lifecycle import status
from engine.errors import CampaignError
from engine.planning.phones import normalize_one
from engine.planning.planner import Plan
from engine.providers.base import Channel, Provider
from engine.providers.errors import ProviderError, RateLimited
from engine.redact import mask_address
from engine.reports import apply as dlr
from engine.reports.poller import poll_batch
from engine.reports.receiver import PushedEvents
from engine.sending import fallback
from engine.sending.dispatch import Sender
from engine.sending.quota import DatabaseQuota
from engine.sending.recovery import due_batches, sweep
from engine.sending.throttle import MemoryThrottle, Throttle, account_id
from engine.settings import Settings
from engine.store import models
from engine.store.models import CampaignState
from engine.store.writes import mark_campaign
from engine.web.webhooks import build_app

#: How often reports are gathered while waiting for them.
REPORT_POLL_SECONDS = 0.5
#: WhatsApp reports are one call per message: asked every this many rounds.
WHATSAPP_EVERY = 10
#: With no new report for this long (after the first), the rest is not coming soon.
QUIET_SECONDS = 10.0
#: Told how many messages are through (sent, failed or in doubt) after each batch.
log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Outcome:
    state: str
    reason: str | None
    counts: dict[str, int]


def _wait_for_deferred(engine: Engine, campaign_id: int) -> None:
    """Batches put off (daily quota, a long `Retry-After`) have no one to send them once this process ends:
    the campaign waits, saying until when and how to go on."""
    batches = models.Batch.__table__
    with engine.connect() as connection:
        later = connection.execute(
            select(func.min(batches.c.not_before), func.coalesce(func.sum(batches.c.size), 0)).where(
                batches.c.campaign_id == campaign_id, batches.c.state == models.BatchState.PLANNED.value
            )
        ).one()
    if later[1]:
        when = f" until {later[0]:%Y-%m-%d %H:%M} UTC" if later[0] else ""
        mark_campaign(
            engine,
            campaign_id,
            CampaignState.WAITING,
            f"{later[1]:,} messages wait{when}; then `campaign resume {campaign_id}` sends them",
        )


@contextlib.asynccontextmanager
async def local_sender(
    engine: Engine, settings: Settings, provider_name: str, receive: bool = False
) -> AsyncIterator[Sender]:
    """A `Sender` with this process's provider client (the embedded sandbox if so configured) and throttle.

    With `receive`, the embedded sandbox's pushed reports (Pixabits pushes, it
    is never polled) are received in this process and stored like the webhook
    receiver stores them, for `wait_for_reports` to apply.
    """
    async with contextlib.AsyncExitStack() as stack:
        webhooks = None
        if receive and provider_name == "pixabits" and uses_sandbox(provider_name, settings):
            webhooks = await stack.enter_async_context(_receiver(engine, settings))
        provider = await stack.enter_async_context(open_provider(provider_name, settings, sandbox_webhooks=webhooks))
        yield _sender(engine, settings, provider)


@contextlib.asynccontextmanager
async def _receiver(engine: Engine, settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """An in-process webhook receiver on loopback; yields its URL and the secret its pushes are signed with."""
    secret = secrets.token_hex(16)
    parser = make_provider("pixabits", settings, base_url="http://127.0.0.1:9")
    listener = PushedEvents.for_settings(engine, settings)
    runner = web.AppRunner(build_app(secret, {"pixabits": parser}, listener), access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}/webhooks/pixabits", secret
    finally:
        await runner.cleanup()
        await parser.aclose()


async def wait_for_reports(
    engine: Engine,
    sender: Sender,
    provider_name: str,
    campaign_id: int,
    settings: Settings,
    stop: asyncio.Event | None = None,
    quiet: float = QUIET_SECONDS,
) -> None:
    """Gather delivery reports until every submitted batch has settled, nothing new has come for a while,
    `CAMPAIGN_REPORT_WAIT_SECONDS` have passed, or `stop` is set.

    Noxitel is asked (`/dlr`, `/rcs/dlr` per batch; WhatsApp per message, less
    often, under the account's throttle); Pixabits reports arrive by push and
    are stored by the in-process receiver. Both are applied each round, and
    RCS messages that did not arrive get their SMS fallback, sent at once. The
    quiet period ends the wait for messages no report will ever come for
    (Pixabits publishes no failure event for RCS and WhatsApp).
    """
    timeout = settings.report_wait_seconds
    max_age = timedelta(hours=settings.dlr_max_age_hours)
    fallback_wait = timedelta(seconds=settings.rcs_fallback_wait_seconds)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    provider = sender.providers[provider_name]
    throttle = sender.throttles[provider_name]
    given_up: set[int] = set()
    heard_at: float | None = None
    rounds = 0
    while True:
        heard = 0
        if provider.name == "noxitel":
            heard = await poll_campaign(
                engine, provider, throttle, campaign_id, given_up, whatsapp=rounds % WHATSAPP_EVERY == 0
            )
        heard += sum(dlr.apply_pending(engine, max_age).counts.values())
        if fallback.due(engine, fallback_wait, max_age, [campaign_id]):
            await send_due(engine, sender, campaign_id)
        rounds += 1
        if heard:
            heard_at = loop.time()
        silent = heard_at is not None and loop.time() - heard_at > quiet
        if not _awaiting(engine, campaign_id, given_up) or silent or loop.time() > deadline:
            return
        if stop is not None and stop.is_set():
            return
        await asyncio.sleep(REPORT_POLL_SECONDS)


async def poll_campaign(
    engine: Engine,
    provider: Provider,
    throttle: Throttle,
    campaign_id: int,
    given_up: set[int],
    whatsapp: bool = True,
) -> int:
    """Ask Noxitel for the reports of each submitted, unsettled batch and apply each page at once.

    Returns how many reports carried a status. A batch the provider does not
    know (a sandbox that has since restarted) or keeps failing on is given up
    for this wait; it is asked again next time.
    """
    batches = models.Batch.__table__
    with engine.connect() as connection:
        open_batches = connection.execute(
            select(
                batches.c.id,
                batches.c.campaign_id,
                batches.c.channel,
                batches.c.provider_batch_id,
                batches.c.provider_fallback,
            ).where(
                batches.c.campaign_id == campaign_id,
                batches.c.state == models.BatchState.SUBMITTED.value,
                batches.c.id.not_in(given_up),
            )
        ).all()
    heard = 0
    for batch in open_batches:
        if batch.channel == Channel.WHATSAPP.value and not whatsapp:
            continue
        try:
            count = await poll_batch(engine, provider, throttle, batch)
        except RateLimited:
            continue
        except ProviderError as exc:
            log.warning("reports of batch %s could not be read (%s); not waiting for them", batch.id, exc)
            given_up.add(batch.id)
            continue
        if count is None:
            given_up.add(batch.id)  # no provider batch id to ask about
        else:
            heard += count
    return heard


def _awaiting(engine: Engine, campaign_id: int, given_up: set[int]) -> bool:
    """Whether a submitted batch still waits for reports (a batch settles once all its messages are through)."""
    batches = models.Batch.__table__
    with engine.connect() as connection:
        return (
            connection.execute(
                select(batches.c.id)
                .where(
                    batches.c.campaign_id == campaign_id,
                    batches.c.state == models.BatchState.SUBMITTED.value,
                    batches.c.id.not_in(given_up),
                )
                .limit(1)
            ).first()
            is not None
        )


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
                progress(messages_done(engine, campaign_id))

    sweep(engine)
    await send_due(engine, sender, campaign_id, one)
    if stop is not None and stop.is_set():
        mark_campaign(
            engine,
            campaign_id,
            CampaignState.PAUSED,
            f"interrupted; `campaign resume {campaign_id}` continues where it stopped",
        )
    _wait_for_deferred(engine, campaign_id)
    final = status(engine, campaign_id)
    return Outcome(final.state, final.reason, final.counts)


async def send_due(
    engine: Engine, sender: Sender, campaign_id: int, one: Callable[[int], Awaitable[None]] | None = None
) -> None:
    """Send the campaign's due batches, and those that sending them made due (an SMS fallback), each once."""
    tried: set[int] = set()
    while due := [b for b, _ in due_batches(engine, campaign_id=campaign_id) if b not in tried]:
        tried.update(due)
        await asyncio.gather(*((one or sender.send_batch)(batch_id) for batch_id in due))


def messages_done(engine: Engine, campaign_id: int) -> int:
    """Messages of batches that are through, read from the small batches table rather than every message."""
    batches = models.Batch.__table__
    through = ("submitted", "settled", "failed", "ambiguous", "cancelled")
    with engine.connect() as connection:
        return int(
            connection.execute(
                select(func.coalesce(func.sum(batches.c.size), 0)).where(
                    batches.c.campaign_id == campaign_id, batches.c.state.in_(through)
                )
            ).scalar_one()
        )


async def send_test(engine: Engine, settings: Settings, plan: Plan, addresses: Sequence[str]) -> dict[str, Any]:
    """Send the plan's first message, as planned, to a few test addresses; nothing is stored."""
    request = plan.request
    canonical = [_test_address(a, request.channel, settings.default_region) for a in addresses]
    first = {
        "body": plan.bodies[0].as_py(),
        "subject": plan.subjects[0].as_py() if plan.subjects is not None else None,
        "fallback_body": plan.fallbacks[0].as_py() if plan.fallbacks is not None else None,
    }
    campaign = SimpleNamespace(
        message_template=request.message,
        fallback_template=request.fallback_message,
        sender=request.sender,
        agent_id=request.agent_id,
        dlt_entity_id=request.dlt_template.entity_id if request.dlt_template else None,
        dlt_template_id=request.dlt_template.template_id if request.dlt_template else None,
    )
    sent: dict[str, str | None] = {}
    async with local_sender(engine, settings, request.provider) as sender:
        provider = sender.providers[request.provider]
        channel = Channel(request.channel)
        groups = [[a] for a in canonical] if provider.max_batch(channel) == 1 else [canonical]
        for group in groups:
            rows = [SimpleNamespace(address=a, **first) for a in group]
            payload, call = sender.payload(channel, campaign, rows, provider)
            await sender.throttles[provider.name].acquire()
            submission = await call(payload)
            sent.update({a: submission.message_ids.get(a) or submission.batch_id for a in group})
    return {"sent": sent}


def _test_address(raw: str, channel: str, region: str) -> str:
    if channel == "email":
        if "@" not in raw:
            raise CampaignError(f"{mask_address(raw)!r} is not an email address")
        return raw.strip().lower()
    e164, _ = normalize_one(raw, region)
    if e164 is None:
        raise CampaignError(f"{mask_address(raw)!r} is not a mobile number that can receive messages")
    return e164
