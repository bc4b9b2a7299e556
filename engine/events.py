"""Raw delivery events: each stored once for audit, and matched to its message, or parked until it can be.

Both paths of `engine.dlr` keep what the provider said before acting on it. A
polled page knows its batch, so its events are stored already matched and
applied at once. A pushed event
names only the provider, a number, perhaps the provider's batch or message id:
it is stored unprocessed, matched in SQL to its message, and folded into the
message's status; an event that matches nothing yet (the provider was faster
than our commit of its ids) stays parked and is tried again on every later
round, until it matches or outlives the reports' maximum age.

Each event's fingerprint (a 64-bit hash of what the provider said) is unique
in the table, so a push delivered twice, or a poll that returns the same
rows again, stores nothing new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from engine import models
from engine.clock import now
from engine.db import bulk_insert
from engine.providers.base import DeliveryReport

E, M, B = models.DeliveryEvent.__table__, models.Message.__table__, models.Batch.__table__
#: Message statuses still waiting for news (a report can only move them forward).
OPEN = ("submitted", "sent", "ambiguous", "queued", "fallback")

_metadata = MetaData()
#: One page of events on its way into `delivery_events`; `rank`, `best` and `error` serve the UPDATE of
#: the messages (`best`: the highest-ranked report of its number in the page), which reads the same rows.
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
    Column("rank", Integer),
    Column("best", Boolean),
    Column("error", Text),
    prefixes=["TEMPORARY"],
)
#: What of a staged event is kept.
COLUMNS = [c.name for c in EVENT_STAGING.columns if c.name not in ("rank", "best", "error")]


def fingerprints(reports: Sequence[DeliveryReport]) -> list[int]:
    """A signed 64-bit hash of what the provider said, per report (a BIGINT on both databases)."""
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    return [
        from_bytes(blake2b(f"{r.provider}\x1f{r.channel}\x1f{r.to}\x1f{r.status}\x1f{r.detail}\x1f{r.batch_id}"
                           f"\x1f{r.message_id}\x1f{r.occurred_at}".encode(), digest_size=8).digest(),
                   "big", signed=True)
        for r in reports
    ]


def cost_of(report: DeliveryReport) -> float | None:
    """The price a report states (Noxitel WhatsApp reports do)."""
    value = report.raw.get("cost") if report.raw else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def columns(
    reports: Sequence[DeliveryReport], statuses: Sequence[str | None], **extra: Sequence[Any]
) -> dict[str, Sequence[Any]]:
    """The staging table's columns for these reports (all the per-report work, none of it in the database).

    `extra` fills `rank`, `best` and `error` where the caller applies the page at once.
    """
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
        "cost": [cost_of(r) for r in reports],
        "occurred_at": [r.occurred_at for r in reports],
        "raw": [orjson.dumps(r.raw).decode() if r.raw else None for r in reports],
        **extra,
    }


def stage(connection: Connection, staged: dict[str, Sequence[Any]]) -> None:
    """Load `columns` into the connection's temporary staging table (emptied first), in one bulk insert."""
    EVENT_STAGING.create(connection, checkfirst=True)
    connection.execute(text("DELETE FROM event_staging"))
    bulk_insert(connection, "event_staging", staged)


def keep_staged(
    connection: Connection,
    message_id: Any,
    campaign_id: Any,
    processed: bool,
    count: bool = False,
    join: Any = None,
) -> int:
    """Copy the staged events into `delivery_events`, skipping any already there.

    `message_id` and `campaign_id` are SQL expressions over `event_staging`,
    or over `join` (`event_staging` joined to what finds each event's message);
    NULL for a push still to be matched. With `count`, returns how many were
    new (read back, which a polled page of 50,000 does not need); else -1.
    """
    S = EVENT_STAGING
    source = select(
        *(S.c[name] for name in COLUMNS), message_id, campaign_id,
        literal(now(), DateTime(timezone=True)), literal(processed, Boolean),
    ).where(true())  # SQLite reads `ON CONFLICT` after a bare SELECT as a join clause without it
    if join is not None:
        source = source.select_from(join)
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(E).from_select(
        [*COLUMNS, "message_id", "campaign_id", "received_at", "processed"], source
    ).on_conflict_do_nothing(index_elements=["fingerprint"])
    if not count:
        connection.execute(statement)
        return -1
    return len(connection.execute(statement.returning(E.c.fingerprint)).all())


def match(connection: Connection, since: datetime) -> None:
    """Give each unmatched, unprocessed event its message, in a few set-based statements.

    The provider's batch id where the event carries one (Noxitel SMS), the
    number always, and the channel; the message holding the event's provider
    message id first; else, by number, a message holding no other provider id:
    one still waiting for news (the oldest), else the newest. Only events that
    find a message are written, so parked events are not rewritten every round.
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
            B.c.state.in_(("submitted", "settled", "ambiguous")),
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
    # SQLite allows the outer row in the subquery's WHERE only, so the order is by the message alone.
    waiting = M.c.status.in_(OPEN)
    by_number = candidates.where(
        or_(E.c.provider_message_id.is_(None), M.c.provider_message_id.is_(None),
            M.c.provider_message_id == E.c.provider_message_id)
    ).order_by(case((waiting, 0), else_=1), case((waiting, M.c.id), else_=-M.c.id))
    connection.execute(
        update(E).where(unmatched, by_number.exists()).values(message_id=by_number.scalar_subquery())
    )
    connection.execute(
        update(E)
        .where(~E.c.processed, E.c.message_id.is_not(None), E.c.campaign_id.is_(None))
        .values(campaign_id=select(M.c.campaign_id).where(M.c.id == E.c.message_id).scalar_subquery())
    )
