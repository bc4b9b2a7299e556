"""The tables that hold the work: campaigns, their batches and one message row per recipient.

The database, not the broker, is the source of truth for what has been sent,
so every state a later step needs is a column here: a batch carries its lease
(`claimed_by`, `claim_expires_at`) so one worker at a time can own it, and the
provider's batch id so a lost answer can be reconciled instead of re-sent; a
message carries the provider's id, the channel actually used (RCS may fall back
to SMS) and its error. The states are CHECK-constrained so a typo in a later
UPDATE fails loudly instead of stranding rows (messages excepted, see `Message`);
the states themselves are spelled in `engine.store.states` and importable from here.
Core statements (`update`, `insert`, joins) take the typed table handles at the end
(`CAMPAIGNS`, `BATCHES`, `MESSAGES`...) rather than each class's `__table__`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from engine.errors import InvalidRequest
from engine.store.states import BatchKind, BatchState, CampaignState, MessageStatus, ScheduleState

#: The longest campaign or schedule name, and suppression reason or source, a person may give.
NAME_CHARS = 200
REASON_CHARS = 200


def bounded(value: str | None, column: ColumnElement[Any], what: str) -> str | None:
    """`value`, if it fits `column` (a table's column, whose length says how long a value may be); a refusal
    naming `what` otherwise, before anything is written (PostgreSQL would refuse it mid-write)."""
    most = getattr(column.type, "length", None)
    if value is not None and most is not None and len(value) > most:
        raise InvalidRequest(f"the {what} has {len(value):,} characters; the most is {most}")
    return value


#: Row ids: BIGINT on PostgreSQL, and SQLite's INTEGER PRIMARY KEY (the rowid) there.
Id = BigInteger().with_variant(Integer(), "sqlite")


def _one_of(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


def utcnow() -> datetime:
    return datetime.now(UTC)


# Constraint names are fixed so migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Base(DeclarativeBase):
    metadata = metadata


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (CheckConstraint(_one_of("state", CampaignState), name="state"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_CHARS))
    channel: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32))
    sender: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16), default=CampaignState.DRAFT.value)
    state_reason: Mapped[str | None] = mapped_column(Text)
    message_template: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    fallback_template: Mapped[str | None] = mapped_column(Text)
    agent_id: Mapped[str | None] = mapped_column(String(64))
    dlt_template_id: Mapped[str | None] = mapped_column(String(19))
    dlt_entity_id: Mapped[str | None] = mapped_column(String(19))
    contacts_file: Mapped[str | None] = mapped_column(Text)
    rejects_file: Mapped[str | None] = mapped_column(Text)
    total_messages: Mapped[int] = mapped_column(Integer, default=0)
    total_segments: Mapped[int] = mapped_column(Integer, default=0)
    estimated_cost: Mapped[float] = mapped_column(Float, default=0.0)
    currency: Mapped[str | None] = mapped_column(String(3))
    summary: Mapped[str | None] = mapped_column(Text)
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The time zone `scheduled_at` was given in, to show it back as the user wrote it.
    scheduled_tz: Mapped[str | None] = mapped_column(String(64))
    #: The hours it may send in, `HH:MM` wall-clock times in `window_tz`; none: any hour.
    window_start: Mapped[str | None] = mapped_column(String(5))
    window_end: Mapped[str | None] = mapped_column(String(5))
    window_tz: Mapped[str | None] = mapped_column(String(64))
    #: When a campaign `waiting` for its window opens: the scheduler sets it running again then.
    wake_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The recurring schedule that planned it. No foreign key: schedules are cancelled, never deleted,
    #: and adding one would rebuild this table on SQLite.
    schedule_id: Mapped[int | None] = mapped_column(Id)
    #: When the user last asked it to pause or cancel (cleared when it runs again): whatever its senders
    #: submitted after this went after the request.
    stop_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=utcnow)


class Schedule(Base):
    """A recurring campaign: the plan options it is planned from again at each occurrence of `cron`.

    `definition` holds the options of `campaign plan` as JSON (the contact file
    by path, read again at each run). `next_run_at` is the next occurrence, in
    UTC; `runs` counts the occurrences taken, and taking one is a conditional
    UPDATE on it, so an occurrence runs once however many schedulers look.
    """

    __tablename__ = "schedules"
    __table_args__ = (CheckConstraint(_one_of("state", ScheduleState), name="state"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(NAME_CHARS))
    cron: Mapped[str] = mapped_column(String(100))
    tz: Mapped[str] = mapped_column(String(64))
    definition: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=ScheduleState.ACTIVE.value)
    next_run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    runs: Mapped[int] = mapped_column(Integer, default=0)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=utcnow)


class Batch(Base):
    """One provider call's worth of messages; `send_day` spreads a campaign over a daily quota."""

    __tablename__ = "batches"
    __table_args__ = (
        CheckConstraint(_one_of("state", BatchState), name="state"),
        UniqueConstraint("campaign_id", "seq"),
        Index(None, "state", "not_before"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    segments: Mapped[int] = mapped_column(Integer)
    estimated_cost: Mapped[float] = mapped_column(Float)
    send_day: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16), default=BatchState.PLANNED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claim_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    provider_batch_id: Mapped[str | None] = mapped_column(String(200), index=True)
    #: `send` (planned with the campaign), `fallback` (SMS for RCS that did not arrive) or `retry`.
    kind: Mapped[str] = mapped_column(String(16), server_default=BatchKind.SEND.value)
    #: The RCS call asked the provider to send the SMS fallback itself (`smsFallback`).
    provider_fallback: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    #: What the provider said the call cost, where it says (Noxitel WhatsApp `total_cost`, Pixabits `credits_used`).
    reported_cost: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Message(Base):
    """One recipient of a campaign; `line` is the contact's line in the uploaded CSV.

    Rows are written a million at a time by `engine.store.db.bulk_insert`, so the
    table carries only what that insert can afford: one secondary index (a
    batch's messages), no CHECK on `status` (1-2 s per million rows on SQLite;
    statuses are written only through `MessageStatus`) and no foreign keys
    (PostgreSQL checks each with a per-row trigger: 5.5 s per million rows).
    Messages are written only with their campaign and batches, in one
    transaction, and must be deleted with them. The second index, on `address`,
    is what matching a pushed report (which names only the number) to its
    message needs; its cost to planning is measured in
    tests/benchmarks/RESULTS.md.
    `cost` is what the provider reports, where it does; the estimate is per batch.
    """

    __tablename__ = "messages"
    # Sending rewrites each row's status once or twice; free room on every page
    # lets PostgreSQL update in place (HOT) instead of rewriting index entries.
    __table_args__ = (Index(None, "batch_id"), Index(None, "address"), {"postgresql_with": {"fillfactor": 70}})

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(Id)
    batch_id: Mapped[int] = mapped_column(Id)
    line: Mapped[int] = mapped_column(Integer)
    address: Mapped[str] = mapped_column(String(320))
    body: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    fallback_body: Mapped[str | None] = mapped_column(Text)
    segments: Mapped[int] = mapped_column(SmallInteger)
    encoding: Mapped[str | None] = mapped_column(String(4))
    cost: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), server_default=MessageStatus.PLANNED.value)
    channel_used: Mapped[str | None] = mapped_column(String(16))
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Suppression(Base):
    """An address that must never be messaged again (opt-out, hard bounce), in canonical form."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(String(REASON_CHARS), default="opt-out")
    source: Mapped[str | None] = mapped_column(String(REASON_CHARS))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SuppressionRemoval(Base):
    """An address taken off the suppression list (the person opted back in), with why and what it had been:
    the record of a consent decision outlives the list entry."""

    __tablename__ = "suppression_removals"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), index=True)
    reason: Mapped[str] = mapped_column(String(REASON_CHARS))
    previous_reason: Mapped[str | None] = mapped_column(String(REASON_CHARS))
    suppressed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    removed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DltTemplate(Base):
    """A template registered on India's DLT platform; `text` keeps the registered `{#var#}` form."""

    __tablename__ = "dlt_templates"

    template_id: Mapped[str] = mapped_column(String(19), primary_key=True)
    entity_id: Mapped[str] = mapped_column(String(19))
    header: Mapped[str] = mapped_column(String(11))
    category: Mapped[str | None] = mapped_column(String(40))
    text: Mapped[str] = mapped_column(Text)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeliveryEvent(Base):
    """One pushed delivery report as received, kept raw once for audit, and the queue pushes are applied from.

    `fingerprint` (a 64-bit hash of what the provider said) is unique, so a
    report pushed twice is stored once. A pushed report is stored first with
    `processed` false; it is then matched to its message and folded into the
    message's status. One that matches no message yet (the provider was faster
    than our commit) stays parked, unprocessed, and is tried again on every
    later round until it matches or grows older than the reports' maximum age.
    `status` is the canonical status, NULL for a word the engine does not know.
    Polled reports are kept a page at a time in `delivery_pages`.
    """

    __tablename__ = "delivery_events"
    __table_args__ = (
        # Matched events only: the parked ones (NULL) are found through the index below.
        Index(
            None,
            "message_id",
            postgresql_where=text("message_id IS NOT NULL"),
            sqlite_where=text("message_id IS NOT NULL"),
        ),
        Index(
            "ix_delivery_events_parked",
            "received_at",
            postgresql_where=text("NOT processed"),
            sqlite_where=text("processed = 0"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    fingerprint: Mapped[int] = mapped_column(BigInteger, unique=True)
    message_id: Mapped[int | None] = mapped_column(Id)
    campaign_id: Mapped[int | None] = mapped_column(Id)
    provider: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(320))
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    provider_batch_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str | None] = mapped_column(String(16))
    provider_status: Mapped[str] = mapped_column(String(100))
    detail: Mapped[str | None] = mapped_column(Text)
    cost: Mapped[float | None] = mapped_column(Float)
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    processed: Mapped[bool] = mapped_column(Boolean)
    #: Matched by the number alone: neither a batch id nor a message id of the provider named its message.
    by_number: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    raw: Mapped[str | None] = mapped_column(Text)


class DeliveryPage(Base):
    """The reports one poll of a batch returned that earlier polls of it had not: kept raw, once each, for audit.

    A page is what the provider said about a batch, so it is kept as one row.
    `events` is JSON, compressed with zstd: an object of equal-length arrays,
    one per field of a report (`to`, `status`, `detail`, `message_id`,
    `batch_id`, `occurred_at`, `raw`, and the engine's `canonical` reading).
    `fingerprints` holds their 64-bit hashes in the same order, little-endian.
    The next poll of the batch reads those hashes and keeps only what is new,
    so a report returned again is kept once. A row per report, found again
    through a unique index, cost more than applying the statuses (10.7 s
    against 6.5 s a million on PostgreSQL); the JSON uncompressed, nearly 300
    bytes a report, made SQLite a third slower
    (tests/benchmarks/RESULTS.md). No foreign keys, as on `messages`.
    """

    __tablename__ = "delivery_pages"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(Id)
    batch_id: Mapped[int] = mapped_column(Id, index=True)
    provider: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))
    reports: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    fingerprints: Mapped[bytes] = mapped_column(LargeBinary)
    events: Mapped[bytes] = mapped_column(LargeBinary)


# The tables for Core statements. A declarative class's `__table__` is typed as any FROM clause,
# which `update()`, `insert()` and `Table.delete()` do not accept; these are the same objects, as tables.
CAMPAIGNS = cast(Table, Campaign.__table__)
SCHEDULES = cast(Table, Schedule.__table__)
BATCHES = cast(Table, Batch.__table__)
MESSAGES = cast(Table, Message.__table__)
DLT_TEMPLATES = cast(Table, DltTemplate.__table__)
SUPPRESSIONS = cast(Table, Suppression.__table__)
SUPPRESSION_REMOVALS = cast(Table, SuppressionRemoval.__table__)
DELIVERY_EVENTS = cast(Table, DeliveryEvent.__table__)
DELIVERY_PAGES = cast(Table, DeliveryPage.__table__)
