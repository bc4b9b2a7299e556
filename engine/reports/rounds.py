"""One round of delivery reports, the same wherever it runs: the beat poller, local mode's wait, the receiver.

A round expires what is too old to wait for, applies the pages of the
providers that are asked (fetched by the caller's choice of batches), applies
the stored reports (pushed, or parked because they came before their
message was known), and moves the RCS messages that did not arrive to their
SMS fallback. Who runs it only chooses which batches are asked and whether
old ones expire; the steps and their order are this module's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, select, update

from engine.clock import now
from engine.reports import statuses
from engine.sending import fallback
from engine.settings import Settings
from engine.store import models
from engine.store.states import THROUGH, UNREPORTED, BatchState, MessageStatus

B, M = models.BATCHES, models.MESSAGES


@dataclass(frozen=True)
class ReportTimes:
    """How long reports are waited for, and how long an RCS message waits before its SMS fallback."""

    max_age: timedelta
    #: None: no fallback is queued this round.
    fallback_wait: timedelta | None

    @classmethod
    def of(cls, settings: Settings) -> ReportTimes:
        return cls(timedelta(hours=settings.dlr_max_age_hours), timedelta(seconds=settings.rcs_fallback_wait_seconds))


@dataclass(frozen=True)
class Round:
    """What one round did."""

    #: Batches whose provider was asked.
    polled: int
    #: Fetched reports that carried a status.
    reports: int
    #: Messages given up on (no final report within the maximum age).
    expired: int
    #: Stored (pushed or parked) reports applied.
    pushed: int = 0
    #: RCS messages moved to an SMS fallback batch (sent by whoever sends planned batches).
    fallbacks: int = 0


@dataclass
class Asked:
    """Counts the batches a page source asked about, as it goes."""

    batches: int = 0


async def report_round(
    engine: Engine,
    times: ReportTimes,
    pages: AsyncIterable[statuses.PolledPage] | None = None,
    asked: Asked | None = None,
    campaign_ids: Iterable[int] | None = None,
    expire_at: datetime | None = None,
    drain: bool = False,
) -> Round:
    """Expire (when `expire_at` is given: what was submitted before `expire_at - max_age`), apply `pages`,
    apply the stored reports (one page of them, or all with `drain`), and queue the SMS fallbacks (of
    `campaign_ids`, or all)."""
    expired = expire_old(engine, expire_at - times.max_age) if expire_at is not None else 0
    fetched = await statuses.apply_stream(engine, pages) if pages is not None else None
    applied = await asyncio.to_thread(apply_stored, engine, times.max_age, drain)
    ids = list(campaign_ids) if campaign_ids is not None else None
    moved = await asyncio.to_thread(queue_fallbacks, engine, times, ids)
    return Round(
        polled=asked.batches if asked is not None else 0,
        reports=sum(fetched.values()) if fetched is not None else 0,
        expired=expired,
        pushed=sum(applied.counts.values()),
        fallbacks=moved,
    )


def apply_stored(engine: Engine, max_age: timedelta, drain: bool) -> statuses.Applied:
    """The stored reports to statuses: a page, or with `drain` page by page until a page is not full (the
    receiver, whose round is nothing else; a poller's round takes a page and leaves the rest to the next)."""
    applied = more = statuses.apply_pending(engine, max_age)
    while drain and more.events >= statuses.PAGE:  # a full page: there may be more behind it
        more = statuses.apply_pending(engine, max_age)
        applied.counts.update(more.counts)
        applied.campaigns |= more.campaigns
        applied.parked = more.parked
        applied.abandoned += more.abandoned
    return applied


def queue_fallbacks(engine: Engine, times: ReportTimes, campaign_ids: list[int] | None = None) -> int:
    if times.fallback_wait is None:
        return 0
    return fallback.due(engine, times.fallback_wait, times.max_age, campaign_ids)


def expire_old(engine: Engine, before: datetime) -> int:
    """Messages of batches submitted before `before` that are still not through become `expired`.

    An `ambiguous` message stays so: whether it went out is still unknown, and
    `campaign resend-ambiguous` is how it is dealt with.
    """
    old = select(B.c.id).where(B.c.state == BatchState.SUBMITTED.value, B.c.submitted_at < before)
    with engine.begin() as connection:
        count = connection.execute(
            update(M)
            .where(M.c.batch_id.in_(old), M.c.status.not_in((*THROUGH, MessageStatus.AMBIGUOUS.value)))
            .values(status=MessageStatus.EXPIRED.value, status_at=now(), error=UNREPORTED)
        ).rowcount
        connection.execute(update(B).where(B.c.id.in_(old)).values(state=BatchState.SETTLED.value, settled_at=now()))
    return count
