"""Pushed delivery events: each stored once for audit, and matched to its message, or parked until it can be.

The receiver keeps what the provider said before acting on it (polled pages,
which know their batch, are kept by `engine.reports.statuses` in `delivery_pages`). A pushed
event names only the provider, a number, perhaps the provider's batch or message id:
it is stored unprocessed, matched in SQL to its message, and folded into the
message's status; an event that matches nothing yet (the provider was faster
than our commit of its ids) stays parked and is tried again on every later
round, until it matches or outlives the reports' maximum age.

Each event's fingerprint (a 64-bit hash of what the provider said) is unique
in the table, so a push delivered twice stores nothing new.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import xxhash
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    MetaData,
    Select,
    String,
    Table,
    Text,
    and_,
    func,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from engine.clock import now
from engine.providers.base import DeliveryReport
from engine.store import models
from engine.store.db import bulk_insert
from engine.store.states import AWAITING_REPORT, NOT_SENT, OPEN, TAKEN_BATCHES, MessageStatus

#: Moves xxh3's unsigned 64 bits into a signed BIGINT's range.
SIGNED = 1 << 63
E, M, B = models.DELIVERY_EVENTS, models.MESSAGES, models.BATCHES

_metadata = MetaData()
#: Pushed events on their way into `delivery_events`.
EVENT_STAGING = Table(
    "event_staging",
    _metadata,
    Column("fingerprint", BigInteger),
    Column("provider", String(32)),
    Column("channel", String(16)),
    Column("address", String(320)),
    Column("provider_message_id", String(200)),
    Column("provider_batch_id", String(200)),
    Column("status", String(16)),
    Column("provider_status", String(100)),
    Column("detail", Text),
    Column("cost", Float),
    Column("occurred_at", DateTime(timezone=True)),
    Column("raw", Text),
    prefixes=["TEMPORARY"],
)
COLUMNS = [c.name for c in EVENT_STAGING.columns]


def fingerprints(reports: Sequence[DeliveryReport]) -> list[int]:
    """A 64-bit hash of what the provider said, per report, as a signed BIGINT on both databases.

    Each report's fields go through orjson, in C, and xxh3: five times faster
    than formatting a string for blake2b, which was half of a page's Python work.
    """
    dumps, digest = orjson.dumps, xxhash.xxh3_64_intdigest
    return [
        digest(dumps((r.provider, r.channel, r.to, r.status, r.detail, r.batch_id, r.message_id, r.occurred_at)))
        - SIGNED
        for r in reports
    ]


def columns(reports: Sequence[DeliveryReport], statuses: Sequence[str | None]) -> dict[str, Sequence[Any]]:
    """The staging table's columns for these reports (all the per-report work, none of it in the database)."""
    return {
        "fingerprint": fingerprints(reports),
        "provider": [r.provider for r in reports],
        "channel": [r.channel.value for r in reports],
        "address": [r.to for r in reports],
        "provider_message_id": [r.message_id for r in reports],
        "provider_batch_id": [r.batch_id for r in reports],
        "status": list(statuses),
        "provider_status": [r.status[:100] for r in reports],
        "detail": [r.detail for r in reports],
        "cost": [r.cost for r in reports],
        "occurred_at": [r.occurred_at for r in reports],
        "raw": [orjson.dumps(r.raw).decode() if r.raw else None for r in reports],
    }


def stage(connection: Connection, staged: dict[str, Sequence[Any]]) -> None:
    """Load `columns` into the connection's temporary staging table (emptied first), in one bulk insert."""
    EVENT_STAGING.create(connection, checkfirst=True)
    connection.execute(text("DELETE FROM event_staging"))
    bulk_insert(connection, "event_staging", staged)


def keep_staged(connection: Connection) -> int:
    """Copy the staged events into `delivery_events`, unmatched and unprocessed, skipping any already there;
    returns how many were new."""
    S = EVENT_STAGING
    none = literal(None, BigInteger)
    source = select(
        *(S.c[name] for name in COLUMNS),
        none,
        none,
        literal(now(), DateTime(timezone=True)),
        literal(False, Boolean),
    ).where(true())  # SQLite reads `ON CONFLICT` after a bare SELECT as a join clause without it
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = (
        dialect_insert(E)
        .from_select([*COLUMNS, "message_id", "campaign_id", "received_at", "processed"], source)
        .on_conflict_do_nothing(index_elements=["fingerprint"])
    )
    return len(connection.execute(statement.returning(E.c.fingerprint)).all())


def _by_number(candidates: Select[Any]) -> list[Select[Any]]:
    """The messages an event without a known provider id may be for, best first, one statement each (SQLite
    allows the outer row in a subquery's WHERE only, so each orders by the message alone).

    1. One the provider surely took, still awaiting news: the newest. Reports come within minutes of
       sending and a second campaign to the same numbers goes hours later, so a report after it is its
       (the first's message may never get one: some channels report no failure at all).
    2. One in doubt (`ambiguous`), the oldest: the report is the evidence it went out.
    3. One with final news already (a `read` after its `delivered`): the newest.
    Never one that was not sent (`planned`, `queued`, `cancelled`, ...): a report for another campaign's
    message must not mark it delivered.
    """
    unnamed = candidates.where(
        or_(
            E.c.provider_message_id.is_(None),
            M.c.provider_message_id.is_(None),
            M.c.provider_message_id == E.c.provider_message_id,
        )
    )
    return [
        unnamed.where(M.c.status.in_(AWAITING_REPORT)).order_by(M.c.id.desc()),
        unnamed.where(M.c.status == MessageStatus.AMBIGUOUS.value).order_by(M.c.id),
        unnamed.where(M.c.status.not_in((*OPEN, *NOT_SENT))).order_by(M.c.id.desc()),
    ]


def match(connection: Connection, since: datetime) -> None:
    """Give each unmatched, unprocessed event its message, in a few set-based statements.

    The provider's batch id where the event carries one (Noxitel SMS), the
    number always, and the channel; the message holding the event's provider
    message id first; else, by number, a message holding no other provider id
    (`_by_number`). Only events that find a message are written, so parked
    events are not rewritten every round.
    """
    candidates = (
        select(M.c.id)
        .join(B, B.c.id == M.c.batch_id)
        .where(
            M.c.address == E.c.address,
            B.c.provider == E.c.provider,
            B.c.channel == E.c.channel,
            or_(E.c.provider_batch_id.is_(None), B.c.provider_batch_id == E.c.provider_batch_id),
            # A batch still being sent has not recorded what the provider took: its reports wait.
            B.c.state.in_(TAKEN_BATCHES),
        )
        .limit(1)
    )
    # Written as each database's partial index on parked events states it, so that index serves.
    unmatched = and_(~E.c.processed, E.c.message_id.is_(None), E.c.received_at >= since)
    by_id = candidates.where(M.c.provider_message_id == E.c.provider_message_id)
    connection.execute(
        update(E)
        .where(unmatched, E.c.provider_message_id.is_not(None), by_id.exists())
        .values(message_id=by_id.scalar_subquery())
    )
    for by_number in _by_number(candidates):
        connection.execute(
            update(E)
            .where(unmatched, by_number.exists())
            .values(message_id=by_number.scalar_subquery(), by_number=E.c.provider_batch_id.is_(None))
        )
    connection.execute(
        update(E)
        .where(~E.c.processed, E.c.message_id.is_not(None), E.c.campaign_id.is_(None))
        .values(campaign_id=select(M.c.campaign_id).where(M.c.id == E.c.message_id).scalar_subquery())
    )


def matched_by_number(connection: Connection, campaign_id: int) -> int:
    """How many of the campaign's pushed reports were matched by the number alone: no batch id came with them
    and their message had no provider id (Pixabits bulk sends), so another campaign to the same numbers could
    have claimed them."""
    return int(
        connection.execute(select(func.count()).where(E.c.campaign_id == campaign_id, E.c.by_number)).scalar_one()
    )
