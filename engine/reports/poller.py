"""Pulling delivery reports: Noxitel is asked, batch by batch, until every message of a batch is through.

Young batches are asked every round, older ones less and less often, and a
batch still open after the maximum age has what is left marked `expired`, so
nothing is polled for ever. The beat task and local mode share the per-batch
fetch.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from engine.clock import now
from engine.providers.base import Channel, DeliveryReport, Provider
from engine.providers.errors import ProviderError, RateLimited
from engine.reports import apply as dlr
from engine.sending import fallback
from engine.sending.throttle import Throttle
from engine.store import models

log = logging.getLogger(__name__)
B, M, C = models.Batch.__table__, models.Message.__table__, models.Campaign.__table__

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
    if batch.channel == Channel.WHATSAPP.value:
        with engine.connect() as connection:
            ids = (
                connection.execute(
                    select(M.c.provider_message_id).where(
                        M.c.batch_id == batch.id, M.c.status.not_in(dlr.THROUGH), M.c.provider_message_id.is_not(None)
                    )
                )
                .scalars()
                .all()
            )
        reports = []
        for message_id in ids:  # Noxitel reports WhatsApp per message only
            await throttle.acquire(max_wait=MAX_WAIT)
            reports.append(await provider.whatsapp_report(message_id))  # type: ignore[attr-defined]
        return reports
    if not batch.provider_batch_id:
        return None
    await throttle.acquire(max_wait=MAX_WAIT)
    if batch.channel == Channel.RCS.value:
        return await provider.rcs_reports(batch_id=batch.provider_batch_id)  # type: ignore[attr-defined,no-any-return]
    return await provider.sms_reports(batch_id=batch.provider_batch_id)  # type: ignore[attr-defined,no-any-return]


async def poll_batch(engine: Engine, provider: Provider, throttle: Throttle, batch: Any) -> int | None:
    """Fetch one batch's reports and apply them; how many carried a status, or None when it cannot be asked
    about. A provider error goes up to the caller, whose policy differs."""
    reports = await batch_reports(engine, provider, throttle, batch)
    if reports is None:
        return None
    applied = dlr.apply(engine, reports, batch.campaign_id, batch.id, provider_fallback=batch.provider_fallback)
    return sum(applied.values())


@dataclass(frozen=True)
class Poll:
    polled: int
    reports: int
    expired: int
    #: Stored (pushed or parked) reports applied this round.
    pushed: int = 0
    #: RCS messages moved to an SMS fallback batch this round.
    fallbacks: int = 0


def _interval(age: timedelta) -> float:
    return next((seconds for limit, seconds in BACKOFF if age < limit), OLD_INTERVAL)


async def poll_due(
    engine: Engine,
    providers: Mapping[str, Provider],
    throttles: Mapping[str, Throttle],
    max_age: timedelta,
    fallback_wait: timedelta | None = None,
    moment: datetime | None = None,
) -> Poll:
    """One round of the poller: expire what is too old, ask about each batch that is due, apply the stored
    (pushed, parked) reports, and queue the SMS fallback of RCS messages that did not arrive."""
    moment = moment or now()
    expired = expire_old(engine, moment - max_age)
    with engine.connect() as connection:
        open_batches = connection.execute(
            select(
                B.c.id,
                B.c.campaign_id,
                B.c.channel,
                B.c.provider,
                B.c.provider_batch_id,
                B.c.submitted_at,
                B.c.updated_at,
                B.c.provider_fallback,
            ).where(B.c.state == models.BatchState.SUBMITTED.value, B.c.provider == "noxitel")
        ).all()
    asked = _Asked()
    applied = await dlr.apply_stream(engine, _due_pages(engine, providers, throttles, open_batches, moment, asked))
    polled, heard = asked.batches, sum(applied.values())
    pushed = sum(dlr.apply_pending(engine, max_age).counts.values())
    fallbacks = fallback.due(engine, fallback_wait, max_age) if fallback_wait is not None else 0
    return Poll(polled, heard, expired, pushed, fallbacks)


@dataclass
class _Asked:
    batches: int = 0


async def _due_pages(
    engine: Engine,
    providers: Mapping[str, Provider],
    throttles: Mapping[str, Throttle],
    open_batches: Sequence[Any],
    moment: datetime,
    asked: _Asked,
) -> AsyncIterator[dlr.PolledPage]:
    """The report page of each batch that is due, fetched in turn; a 429 ends the round, another provider
    error skips the batch until its next turn."""
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
            yield dlr.PolledPage(batch.campaign_id, batch.id, reports, batch.provider_fallback)


#: The error of a message the engine gave up on: no report came, so it may well have been delivered.
UNREPORTED = "no final delivery report within the maximum age"


def expire_old(engine: Engine, before: datetime) -> int:
    """Messages of batches submitted before `before` that are still not through become `expired`.

    An `ambiguous` message stays so: whether it went out is still unknown, and
    `campaign resend-ambiguous` is how it is dealt with.
    """
    old = select(B.c.id).where(B.c.state == models.BatchState.SUBMITTED.value, B.c.submitted_at < before)
    with engine.begin() as connection:
        count = connection.execute(
            update(M)
            .where(M.c.batch_id.in_(old), M.c.status.not_in((*dlr.THROUGH, models.MessageStatus.AMBIGUOUS.value)))
            .values(status=models.MessageStatus.EXPIRED.value, status_at=now(), error=UNREPORTED)
        ).rowcount
        connection.execute(
            update(B).where(B.c.id.in_(old)).values(state=models.BatchState.SETTLED.value, settled_at=now())
        )
    return count


def _aware(moment: datetime) -> datetime:
    """SQLite gives datetimes back without their zone; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
