"""Pulling delivery reports: a polled provider is asked, batch by batch, until every message of a batch is
through.

Young batches are asked every round, older ones less and less often, and a
batch still open after the maximum age has what is left marked `expired`, so
nothing is polled for ever. The beat task and local mode share the per-batch
fetch; what they do with the pages is one report round (`engine.reports.rounds`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from engine.clock import now
from engine.providers import names_where
from engine.providers.base import Channel, DeliveryReport, Provider
from engine.providers.errors import ProviderError, RateLimited
from engine.reports import statuses
from engine.reports.rounds import Asked, ReportTimes, Round, report_round
from engine.sending.throttle import Throttle
from engine.store import models
from engine.store.states import THROUGH, BatchState

log = logging.getLogger(__name__)
#: The providers whose reports are fetched (the others push theirs).
POLLED = names_where(lambda client: client.polls_reports)
B, M, C = models.BATCHES, models.MESSAGES, models.CAMPAIGNS
#: What a report page needs of its batch.
PAGE_KEYS = (B.c.id, B.c.campaign_id, B.c.channel, B.c.provider_batch_id, B.c.provider_fallback)

#: (age below which, seconds between polls): young batches every round, old ones rarely.
BACKOFF = ((timedelta(minutes=10), 0.0), (timedelta(hours=1), 60.0), (timedelta(days=1), 300.0))
OLD_INTERVAL = 900.0
#: The longest any one report fetch may wait for the account's throttle.
MAX_WAIT = 10.0


async def batch_reports(
    engine: Engine, provider: Provider, throttle: Throttle, batch: Any
) -> list[DeliveryReport] | None:
    """The provider's reports for one batch; None when it has no provider batch id to ask about.
    After a 429 every caller of the account is held before the error goes up."""
    try:
        return await _fetch(engine, provider, throttle, batch)
    except RateLimited as exc:
        await throttle.hold(exc.retry_after)
        raise


async def _fetch(engine: Engine, provider: Provider, throttle: Throttle, batch: Any) -> list[DeliveryReport] | None:
    channel = Channel(batch.channel)
    if channel in provider.reports_per_message:
        reports = []
        for message_id in _unsettled_ids(engine, batch.id):
            await throttle.acquire(max_wait=MAX_WAIT)
            reports.append(await provider.message_report(channel, message_id))
        return reports
    if not batch.provider_batch_id:
        return None
    await throttle.acquire(max_wait=MAX_WAIT)
    return await provider.batch_reports(channel, batch.provider_batch_id)


def _unsettled_ids(engine: Engine, batch_id: int) -> list[str]:
    """The provider's ids of the batch's messages that are not through yet."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(M.c.provider_message_id).where(
                    M.c.batch_id == batch_id, M.c.status.not_in(THROUGH), M.c.provider_message_id.is_not(None)
                )
            ).scalars()
        )


def _interval(age: timedelta) -> float:
    return next((seconds for limit, seconds in BACKOFF if age < limit), OLD_INTERVAL)


async def poll_due(
    engine: Engine,
    providers: Mapping[str, Provider],
    throttles: Mapping[str, Throttle],
    max_age: timedelta,
    fallback_wait: timedelta | None = None,
    moment: datetime | None = None,
) -> Round:
    """The beat's report round: every batch that is due is asked, and what is too old expires."""
    moment = moment or now()
    asked = Asked()
    pages = due_pages(engine, providers, throttles, moment, asked)
    return await report_round(engine, ReportTimes(max_age, fallback_wait), pages, asked, expire_at=moment)


async def due_pages(
    engine: Engine,
    providers: Mapping[str, Provider],
    throttles: Mapping[str, Throttle],
    moment: datetime,
    asked: Asked,
) -> AsyncIterator[statuses.PolledPage]:
    """The report page of each submitted batch of a polled provider that is due, fetched in turn; a 429 ends
    the round, another provider error skips the batch until its next turn."""
    with engine.connect() as connection:
        open_batches = connection.execute(
            select(*PAGE_KEYS, B.c.provider, B.c.submitted_at, B.c.updated_at).where(
                B.c.state == BatchState.SUBMITTED.value, B.c.provider.in_(POLLED)
            )
        ).all()
    for batch in open_batches:
        age = moment - _aware(batch.submitted_at or moment)
        if (moment - _aware(batch.updated_at or moment)).total_seconds() < _interval(age):
            continue
        with engine.begin() as connection:  # asked now: the backoff counts from here
            connection.execute(update(B).where(B.c.id == batch.id).values(updated_at=moment))
        try:
            reports = await batch_reports(engine, providers[batch.provider], throttles[batch.provider], batch)
        except RateLimited:
            return
        except ProviderError as exc:
            log.warning("reports of batch %s could not be read (%s); asked again later", batch.id, exc)
            continue
        if reports is not None:
            asked.batches += 1
            yield statuses.PolledPage(batch.campaign_id, batch.id, reports, batch.provider_fallback)


async def campaign_pages(
    engine: Engine,
    provider: Provider,
    throttle: Throttle,
    campaign_id: int,
    given_up: set[int],
    per_message: bool = True,
) -> AsyncIterator[statuses.PolledPage]:
    """The report page of each submitted batch of one campaign, asked now (local mode waits on one campaign).

    A batch the provider does not know (a sandbox that has since restarted),
    keeps failing on, or has no batch id for is given up for this wait (added
    to `given_up`); a 429 skips the batch this time. `per_message=False` leaves
    out the channels reported message by message (a call each).
    """
    with engine.connect() as connection:
        open_batches = connection.execute(
            select(*PAGE_KEYS).where(
                B.c.campaign_id == campaign_id,
                B.c.state == BatchState.SUBMITTED.value,
                B.c.id.not_in(given_up),
            )
        ).all()
    for batch in open_batches:
        if Channel(batch.channel) in provider.reports_per_message and not per_message:
            continue
        try:
            reports = await batch_reports(engine, provider, throttle, batch)
        except RateLimited:
            continue
        except ProviderError as exc:
            log.warning("reports of batch %s could not be read (%s); not waiting for them", batch.id, exc)
            reports = None
        if reports is None:
            given_up.add(batch.id)
            continue
        yield statuses.PolledPage(batch.campaign_id, batch.id, reports, batch.provider_fallback)


def _aware(moment: datetime) -> datetime:
    """SQLite gives datetimes back without their zone; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
