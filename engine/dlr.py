"""Delivery reports: the providers' words mapped to canonical statuses, applied to messages in one statement.

Statuses only move forward: a late `sent` never overwrites `delivered`, `read`
outranks `delivered`, and any other final status is final. The rank lives in
SQL (a CASE over the status), so a page of 50,000 reports is applied with one
UPDATE joined to a staging table, not one UPDATE per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    update,
)

from engine import events, models
from engine.clock import now
from engine.db import bulk_insert
from engine.providers.base import Channel, DeliveryReport

log = logging.getLogger(__name__)
S = models.MessageStatus

#: Higher wins. From 10 up a status is final; only `read` may follow `delivered`.
RANK: dict[str, int] = {
    S.PLANNED: 0, S.QUEUED: 1, S.SUBMITTED: 2, S.AMBIGUOUS: 2, S.SENT: 3, S.FALLBACK: 4,
    S.DELIVERED: 10, S.FAILED: 10, S.REJECTED: 10, S.UNDELIVERABLE: 10, S.EXPIRED: 10,
    S.SUPPRESSED: 10, S.INVALID: 10, S.CANCELLED: 10, S.READ: 11,
}
FINAL_RANK = 10
FINAL = tuple(status.value for status, rank in RANK.items() if rank >= FINAL_RANK)
#: What lets a batch settle: final statuses, and `fallback`, whose SMS is the provider's to report.
THROUGH = (*FINAL, S.FALLBACK.value)

#: Noxitel words (SMS `dlr.status` or its operator reply, RCS and WhatsApp report statuses), lower-cased.
NOXITEL: dict[Channel, dict[str, S | None]] = {
    Channel.SMS: {
        "pending": None, "submitted": S.SUBMITTED, "sent": S.SENT,
        "handset delivered": S.DELIVERED, "delivered": S.DELIVERED, "delivrd": S.DELIVERED,
        "undelivered": S.UNDELIVERABLE, "undeliv": S.UNDELIVERABLE, "failed": S.FAILED,
        "expired": S.EXPIRED, "rejected": S.REJECTED, "rejectd": S.REJECTED,
        "dlt template not registered": S.REJECTED, "dnd": S.REJECTED, "ndnc": S.REJECTED,
        "blacklisted": S.REJECTED, "invalid number": S.REJECTED,
    },
    Channel.RCS: {
        "pending": None, "sent": S.SENT, "delivered": S.DELIVERED, "read": S.READ, "failed": S.FAILED,
        "incompatible": S.UNDELIVERABLE,
    },
    Channel.WHATSAPP: {"sent": S.SENT, "delivered": S.DELIVERED, "read": S.READ, "failed": S.FAILED},
}

#: Pixabits events; a failure's kind is in the report's detail.
PIXABITS: dict[str, S] = {
    "sms.message.delivered": S.DELIVERED,
    "sms.message.failed": S.FAILED,
    "email.delivered": S.DELIVERED,
    "email.opened": S.READ,
    "email.clicked": S.READ,
    "email.bounced": S.FAILED,
    "rcs.message.delivered": S.DELIVERED,
    "rcs.message.read": S.READ,
    "rcs.fallback.triggered": S.FALLBACK,
    "wa.message.delivered": S.DELIVERED,
    "wa.message.read": S.READ,
}
PIXABITS_FAILURES: dict[str, S] = {
    "undeliv": S.UNDELIVERABLE,
    "expired": S.EXPIRED,
    "dlt_template_not_registered": S.REJECTED,
    "dnd": S.REJECTED,
    "invalid_number": S.REJECTED,
    "hard": S.UNDELIVERABLE,
}


def canonical(report: DeliveryReport, provider_fallback: bool = False) -> S | str | None:
    """The canonical status of a report; None when it says nothing new (pending); `"unknown"` when the word is new.

    `provider_fallback`: an RCS message reported `incompatible` was handed to
    the provider's own SMS fallback, so it is `fallback`, not undeliverable.
    """
    if report.provider == "pixabits":
        status = PIXABITS.get(report.status.lower())
        if status is S.FAILED and report.detail:
            return PIXABITS_FAILURES.get(report.detail.lower(), S.FAILED)
        return status if status is not None else "unknown"
    words = NOXITEL.get(report.channel, {})
    word = report.status.lower()
    if word not in words and report.detail:
        word = report.detail.lower()
    if word not in words:
        return "unknown"
    status = words[word]
    if status is S.UNDELIVERABLE and word == "incompatible" and provider_fallback:
        return S.FALLBACK
    return status


_staging_metadata = MetaData()
#: Pushed events' best status per message, joined by one UPDATE of `messages`.
FOLD_STAGING = Table(
    "fold_staging",
    _staging_metadata,
    Column("message_id", BigInteger, primary_key=True),
    Column("batch_id", BigInteger),
    Column("status", String(16)),
    Column("rank", Integer),
    Column("detail", String(200)),
    Column("provider_message_id", String(200)),
    Column("cost", Float),
    prefixes=["TEMPORARY"],
)
M, B, E = models.Message.__table__, models.Batch.__table__, models.DeliveryEvent.__table__
#: Unprocessed pushed events applied per round.
PAGE = 10_000


def _rank_of(column: object) -> object:
    return case({status.value: rank for status, rank in RANK.items()}, value=column, else_=0)


def _forward(staged_rank: Any) -> Any:
    """Only forward: a higher rank than the message's, and the message not final (but `read` after `delivered`)."""
    current = _rank_of(M.c.status)
    return and_(staged_rank > current, or_(current < FINAL_RANK, M.c.status == S.DELIVERED.value))


def _error(status: str, detail: str | None) -> str | None:
    """A failure's detail is its error; a delivered (or read) message has none."""
    return detail if status in FINAL and status not in (S.DELIVERED.value, S.READ.value) else None


@dataclass
class Page:
    """A polled page judged and laid out in columns, ready to be written: all the Python work of applying it."""

    columns: dict[str, Sequence[Any]]
    seen: Counter[str]
    changes: bool


def prepare(reports: Sequence[DeliveryReport], provider_fallback: bool = False) -> Page:
    """Canonical status, rank and error of each report, and which report of each number is its best."""
    words: dict[tuple[str, str, str | None], tuple[str | None, int | None, str | None, bool]] = {}
    statuses: list[str | None] = []
    ranks: list[int | None] = []
    errors: list[str | None] = []
    best: dict[str, tuple[int, int]] = {}
    for i, report in enumerate(reports):
        key = (report.channel, report.status, report.detail)
        known = words.get(key)
        if known is None:  # a page holds a handful of distinct words: each is read once
            status = canonical(report, provider_fallback)
            if status == "unknown":
                log.warning("%s reported an unknown status %r (kept as it was)", report.provider, report.status)
            word = None if status is None or status == "unknown" else str(status)
            error = _error(word, report.detail) if word else None
            known = words[key] = (word, RANK[S(word)] if word else None, error, status == "unknown")
        word, rank, error, _ = known
        statuses.append(word)
        ranks.append(rank)
        errors.append(error)
        if rank is not None:
            held = best.get(report.to)
            if held is None or rank > held[0]:
                best[report.to] = (rank, i)
    chosen = [False] * len(reports)
    for _, i in best.values():
        chosen[i] = True
    staged = events.columns(reports, statuses, rank=ranks, best=chosen, error=errors)
    return Page(staged, _seen(reports, words), bool(best))


def write(engine: Engine, page: Page, campaign_id: int, batch_id: int | None = None) -> Counter[str]:
    """Keep the page's reports (each once) and apply the best status per number, in one transaction.

    Each report's message is found by its number within the batch. PostgreSQL
    knows its tables and joins the page to the batch's messages; SQLite, which
    has no statistics here, is told to look each number up by the address index
    (`+ 0` keeps it from walking the batch index instead).
    """
    if not page.columns["fingerprint"]:
        return page.seen
    scope = M.c.campaign_id == campaign_id if batch_id is None else M.c.batch_id == batch_id
    staged = events.EVENT_STAGING
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            scope = M.c.campaign_id + 0 == campaign_id if batch_id is None else M.c.batch_id + 0 == batch_id
        events.stage(connection, page.columns)
        joined = staged.outerjoin(M, and_(scope, M.c.address == staged.c.address))
        events.keep_staged(connection, M.c.id, literal(campaign_id, BigInteger), processed=True, join=joined)
        if page.changes:
            connection.execute(
                update(M)
                .where(scope, M.c.address == staged.c.address, staged.c.best, _forward(staged.c.rank))
                .values(status=staged.c.status, status_at=now(), error=staged.c.error,
                        cost=func.coalesce(staged.c.cost, M.c.cost))
            )
            _settle(connection, B.c.campaign_id == campaign_id if batch_id is None else B.c.id == batch_id)
    return page.seen


def apply(
    engine: Engine,
    reports: Sequence[DeliveryReport],
    campaign_id: int,
    batch_id: int | None = None,
    provider_fallback: bool = False,
) -> Counter[str]:
    """Keep a polled page of reports and apply it to the messages (matched by number within the batch).

    Every report is stored once in `delivery_events` (a report the provider
    returns again is skipped); then the best status per number is applied in
    one forward-only UPDATE. Returns how many reports carried each canonical
    status (and `unknown`), whether or not they changed a message: a report
    that only repeats or lags behind what is known changes nothing.
    """
    return write(engine, prepare(reports, provider_fallback), campaign_id, batch_id)


class PolledPage(NamedTuple):
    """One batch's page of reports, as the poller fetched it."""

    campaign_id: int
    batch_id: int
    reports: Sequence[DeliveryReport]
    provider_fallback: bool


async def apply_stream(engine: Engine, pages: AsyncIterable[PolledPage]) -> Counter[str]:
    """Apply pages as they come, preparing each while the database writes the one before (in a thread):
    the two cores share the work, and one page is written at a time. A page in writing when the stream
    fails is still written."""
    seen: Counter[str] = Counter()
    writing: asyncio.Task[Counter[str]] | None = None
    try:
        async for campaign_id, batch_id, reports, provider_fallback in pages:
            page = prepare(reports, provider_fallback)
            if writing is not None:
                seen.update(await writing)
            writing = asyncio.create_task(asyncio.to_thread(write, engine, page, campaign_id, batch_id))
        if writing is not None:
            seen.update(await writing)
            writing = None
    finally:
        if writing is not None:
            await asyncio.gather(writing, return_exceptions=True)
    return seen


def _seen(reports: Sequence[DeliveryReport], words: dict[Any, tuple[str | None, Any, Any, bool]]) -> Counter[str]:
    """How many reports carried each canonical status, `unknown` for words the engine does not know."""
    counts: Counter[str] = Counter()
    for key, count in Counter((r.channel, r.status, r.detail) for r in reports).items():
        word, _, _, unknown = words[key]
        if word is not None or unknown:
            counts[word or "unknown"] += count
    return counts


def _settle(connection: Connection, which: Any) -> None:
    """A submitted batch whose every message is through is settled: nothing more will be asked about it."""
    open_message = exists().where(M.c.batch_id == B.c.id, M.c.status.not_in(THROUGH))
    connection.execute(
        update(B)
        .where(which, B.c.state == models.BatchState.SUBMITTED.value, ~open_message)
        .values(state=models.BatchState.SETTLED.value, settled_at=now())
    )


def store_pushed(engine: Engine, reports: Sequence[DeliveryReport]) -> int:
    """Keep pushed reports, unmatched and unprocessed, for `apply_pending`; returns how many were new."""
    if not reports:
        return 0
    words = [canonical(r) for r in reports]
    statuses = [None if w is None or w == "unknown" else str(w) for w in words]
    with engine.begin() as connection:
        events.stage(connection, events.columns(reports, statuses))
        none = literal(None, BigInteger)
        return events.keep_staged(connection, none, none, processed=False, count=True)


@dataclass
class Applied:
    """What one round of `apply_pending` did: statuses seen, campaigns touched, events parked or given up."""

    counts: Counter[str] = field(default_factory=Counter)
    campaigns: set[int] = field(default_factory=set)
    #: Events taken from the queue this round (a full page means more may wait).
    events: int = 0
    parked: int = 0
    abandoned: int = 0


#: Key of the PostgreSQL advisory lock that lets one process at a time apply stored events.
APPLY_LOCK = 0x636D5F646C72  # "cm_dlr"


def apply_pending(engine: Engine, max_age: timedelta) -> Applied:
    """Match unprocessed (pushed or parked) events to their messages and fold them into the messages' statuses.

    Events that match nothing stay parked for the next round; those older than
    `max_age` are given up (kept, marked processed, without a message). One
    process at a time does this (the receiver and the beat poller both may):
    on PostgreSQL a transaction-scoped advisory lock orders them; SQLite
    has one writer anyway.
    """
    applied = Applied()
    moment = now()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(APPLY_LOCK)))
        events.match(connection, moment - max_age)
        rows = connection.execute(
            select(E.c.fingerprint, E.c.message_id, E.c.campaign_id, E.c.status, E.c.provider_status, E.c.detail,
                   E.c.provider_message_id, E.c.cost, E.c.channel, B.c.channel.label("batch_channel"),
                   B.c.provider_fallback, M.c.batch_id)
            .join(M, M.c.id == E.c.message_id)
            .join(B, B.c.id == M.c.batch_id)
            .where(~E.c.processed)
            .order_by(E.c.received_at, E.c.fingerprint)
            .limit(PAGE)
        ).all()
        applied.events = len(rows)
        if rows:
            applied.counts = _fold(connection, rows)
            applied.campaigns = {row.campaign_id for row in rows}
            ids = [row.fingerprint for row in rows]
            for start in range(0, len(ids), 1000):
                connection.execute(update(E).where(E.c.fingerprint.in_(ids[start:start + 1000])).values(processed=True))
            _settle(connection, B.c.id.in_({row.batch_id for row in rows}))
        applied.abandoned = connection.execute(
            update(E)
            .where(~E.c.processed, E.c.message_id.is_(None), E.c.received_at < moment - max_age)
            .values(processed=True)
        ).rowcount
        applied.parked = connection.execute(
            select(func.count()).select_from(E).where(~E.c.processed, E.c.message_id.is_(None))
        ).scalar_one()
    if applied.abandoned:
        log.warning("%d pushed reports matched no message within %s; given up", applied.abandoned, max_age)
    return applied


def _fold(connection: Connection, rows: Sequence[Any]) -> Counter[str]:
    """The best status each message's events carry, applied forward-only in one UPDATE."""
    seen: Counter[str] = Counter()
    best: dict[int, tuple[str, int, str | None, str | None, float | None, int]] = {}
    for row in rows:
        status = row.status
        if status is None:
            seen["unknown"] += 1
            continue
        if row.channel != row.batch_channel:  # about an earlier attempt (RCS before its SMS fallback): kept only
            continue
        if status == S.UNDELIVERABLE and row.provider_status.lower() == "incompatible" and row.provider_fallback:
            status = S.FALLBACK.value  # the provider sends the SMS itself
        seen[status] += 1
        rank = RANK[S(status)]
        known = best.get(row.message_id)
        if known is None or rank > known[1]:
            pmid = row.provider_message_id or (known[3] if known else None)
            best[row.message_id] = (status, rank, row.detail, pmid, row.cost, row.batch_id)
    if not best:
        return seen
    FOLD_STAGING.create(connection, checkfirst=True)
    connection.execute(text("DELETE FROM fold_staging"))
    ids = list(best)
    values = [best[i] for i in ids]
    bulk_insert(connection, "fold_staging", {
        "message_id": ids,
        "batch_id": [v[5] for v in values],
        "status": [v[0] for v in values],
        "rank": [v[1] for v in values],
        "detail": [_error(v[0], v[2]) for v in values],
        "provider_message_id": [v[3] for v in values],
        "cost": [v[4] for v in values],
    })
    F = FOLD_STAGING
    connection.execute(
        update(M)
        # Still in the batch its events were judged for: a message moved meanwhile (to its SMS
        # fallback) is not given its earlier attempt's news; PostgreSQL re-checks this on a row
        # another transaction just changed.
        .where(M.c.id == F.c.message_id, M.c.batch_id == F.c.batch_id, _forward(F.c.rank))
        .values(status=F.c.status, status_at=now(), error=F.c.detail,
                provider_message_id=func.coalesce(M.c.provider_message_id, F.c.provider_message_id),
                cost=func.coalesce(F.c.cost, M.c.cost))
    )
    return seen
