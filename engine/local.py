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
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Engine, func, select

from engine.accounts import open_provider, uses_sandbox
from engine.campaigns.lifecycle import status
from engine.clock import now
from engine.errors import CampaignError
from engine.planning.phones import normalize_one
from engine.planning.planner import Plan
from engine.providers import client_class
from engine.providers.base import Channel, Provider
from engine.redact import mask_address
from engine.reports.poller import campaign_pages
from engine.reports.receiver import PushedEvents
from engine.reports.rounds import ReportTimes, report_round
from engine.sending.dispatch import Sender
from engine.sending.recovery import due_batches, sweep
from engine.sending.senders import make_sender
from engine.serve import serve
from engine.settings import Settings
from engine.store import models
from engine.store.states import DONE_BATCHES, BatchState, CampaignState
from engine.store.writes import mark_campaign
from engine.web.webhooks import build_app

#: How often reports are gathered while waiting for them.
REPORT_POLL_SECONDS = 0.5
#: Reports asked one call per message (WhatsApp) are asked every this many rounds.
PER_MESSAGE_EVERY = 10
#: With no new report for this long (after the first), the rest is not coming soon.
QUIET_SECONDS = 10.0
log = logging.getLogger(__name__)

#: Told how many messages are through (sent, failed or in doubt) after each batch.
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Outcome:
    state: str
    reason: str | None
    counts: dict[str, int]


def _wait_for_deferred(engine: Engine, campaign_id: int) -> None:
    """Batches put off (daily quota, a long `Retry-After`) have no one to send them once this process ends:
    the campaign waits, saying until when and how to go on."""
    batches = models.BATCHES
    with engine.connect() as connection:
        later = connection.execute(
            select(func.min(batches.c.not_before), func.coalesce(func.sum(batches.c.size), 0)).where(
                batches.c.campaign_id == campaign_id, batches.c.state == BatchState.PLANNED.value
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

    With `receive`, the embedded sandbox's pushed reports (of a provider that
    pushes them and is never polled) are received in this process and stored
    like the webhook receiver stores them, for `wait_for_reports` to apply.
    """
    async with contextlib.AsyncExitStack() as stack:
        webhooks = None
        client = client_class(provider_name)
        if receive and not client.polls_reports and uses_sandbox(provider_name, settings):
            webhooks = await stack.enter_async_context(_receiver(engine, settings, client))
        provider = await stack.enter_async_context(open_provider(provider_name, settings, sandbox_webhooks=webhooks))
        yield _sender(engine, settings, provider)


@contextlib.asynccontextmanager
async def _receiver(engine: Engine, settings: Settings, client: type[Provider]) -> AsyncIterator[tuple[str, str]]:
    """An in-process webhook receiver on loopback for `client`'s pushes; yields its URL and the secret its
    pushes are signed with."""
    secret = secrets.token_hex(16)
    listener = PushedEvents.for_settings(engine, settings)
    async with serve(build_app(secret, {client.name: client}, listener)) as url:
        yield url + client.webhook_paths[0], secret


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

    A polled provider is asked (per batch; per message, less often, where it
    reports so, under the account's throttle); a pushing provider's reports
    are stored by the in-process receiver. Each is one report round
    (`engine.reports.rounds`), and RCS messages that did not arrive get their
    SMS fallback, sent at once. The quiet period ends the wait for messages no
    report will ever come for (a provider may publish no failure event for
    RCS and WhatsApp).
    """
    times = ReportTimes.of(settings)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.report_wait_seconds
    provider = sender.providers[provider_name]
    throttle = sender.throttles[provider_name]
    given_up: set[int] = set()
    heard_at: float | None = None
    rounds = 0
    while True:
        pages = None
        if provider.polls_reports:
            every = rounds % PER_MESSAGE_EVERY == 0
            pages = campaign_pages(engine, provider, throttle, campaign_id, given_up, per_message=every)
        done = await report_round(engine, times, pages, campaign_ids=[campaign_id])
        if done.fallbacks:
            await send_due(engine, sender, campaign_id)
        rounds += 1
        if done.reports + done.pushed:
            heard_at = loop.time()
        silent = heard_at is not None and loop.time() - heard_at > quiet
        if not _awaiting(engine, campaign_id, given_up) or silent or loop.time() > deadline:
            return
        if stop is not None and stop.is_set():
            return
        await asyncio.sleep(REPORT_POLL_SECONDS)


def _awaiting(engine: Engine, campaign_id: int, given_up: set[int]) -> bool:
    """Whether a submitted batch still waits for reports (a batch settles once all its messages are through)."""
    batches = models.BATCHES
    with engine.connect() as connection:
        return (
            connection.execute(
                select(batches.c.id)
                .where(
                    batches.c.campaign_id == campaign_id,
                    batches.c.state == BatchState.SUBMITTED.value,
                    batches.c.id.not_in(given_up),
                )
                .limit(1)
            ).first()
            is not None
        )


def _sender(engine: Engine, settings: Settings, provider: Provider) -> Sender:
    return make_sender(engine, settings, {provider.name: provider}, f"local:{socket.gethostname()}:{os.getpid()}")


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
    `stop` is set (Ctrl-C): the campaign is paused at once, so bulk calls in
    flight finish, per-recipient calls stop within about a second, no batch is
    started, and a resume sends exactly what is left.
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
    interrupt = asyncio.create_task(_pause_when_set(engine, campaign_id, stop)) if stop is not None else None
    try:
        await send_due(engine, sender, campaign_id, one)
    finally:
        if interrupt is not None:
            interrupt.cancel()
    if stop is not None and stop.is_set():
        _interrupted(engine, campaign_id)
    _wait_for_deferred(engine, campaign_id)
    final = status(engine, campaign_id)
    return Outcome(final.state, final.reason, final.counts)


async def _pause_when_set(engine: Engine, campaign_id: int, stop: asyncio.Event) -> None:
    await stop.wait()
    _interrupted(engine, campaign_id)


def _interrupted(engine: Engine, campaign_id: int) -> None:
    """Pause the running campaign, as `campaign pause` does (a no-op once it is paused, or no longer running)."""
    mark_campaign(
        engine,
        campaign_id,
        CampaignState.PAUSED,
        f"interrupted; `campaign resume {campaign_id}` continues where it stopped",
        stop_requested_at=now(),
    )


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
    batches = models.BATCHES
    with engine.connect() as connection:
        return int(
            connection.execute(
                select(func.coalesce(func.sum(batches.c.size), 0)).where(
                    batches.c.campaign_id == campaign_id, batches.c.state.in_(DONE_BATCHES)
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
