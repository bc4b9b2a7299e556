"""A campaign's life as the marketer steers it: pause, resume, cancel, and how far it has got.

These only change rows; whoever sends (local mode or the workers) reads the
campaign's state before claiming each batch, and again between the calls of a
batch (`engine.sending.watch`), so a pause takes effect within about a second
and a resume continues from the recorded state, never from a counter: the
messages still `planned` are exactly what is left to send. When a pause or
cancel was asked is kept, so status can say how many messages went after it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, case, exists, func, or_, select, true, update

from engine.clock import now
from engine.errors import CampaignError
from engine.reports.pushed import matched_by_number
from engine.sending import rebatch
from engine.sending.recovery import due_batches, per_recipient
from engine.store import models
from engine.store.states import (
    NOT_CANCELLABLE,
    NOT_SENT,
    OPTED_OUT_BEFORE_SEND,
    PAUSABLE,
    REACHED,
    SENT_BATCHES,
    STARTABLE,
    TAKEN_BATCHES,
    TEMPORARY_FAILURES,
    UNREPORTED,
    BatchKind,
    BatchState,
    CampaignState,
    MessageStatus,
)
from engine.store.writes import cancel_unsent, complete_if_idle, lock, mark_campaign
from engine.windows import as_utc

C, B, M = models.CAMPAIGNS, models.BATCHES, models.MESSAGES
State = CampaignState


@dataclass
class Status:
    campaign_id: int
    name: str
    channel: str
    provider: str
    state: str
    reason: str | None
    messages: int
    counts: dict[str, int]
    batches: dict[str, int]
    estimated_cost: float
    currency: str | None
    started_at: datetime | None
    finished_at: datetime | None
    planned_at: datetime | None = None
    first_submit: datetime | None = None
    last_submit: datetime | None = None
    last_report: datetime | None = None
    #: What the provider said the campaign cost, where it says (None: it did not).
    reported_cost: float | None = None
    #: Recipients handed to an SMS fallback: by the engine (a fallback batch) or by the provider.
    fallbacks: int = 0
    #: Messages left `suppressed` when their batch went, their address having opted out after planning.
    suppressed_at_send: int = 0
    #: When the user asked it to pause or cancel (None: not asked, or resumed since).
    stop_requested_at: datetime | None = None
    #: Messages submitted (or left in doubt) after that request: calls already with the provider finish.
    sent_after_stop: int = 0
    #: Pushed reports matched by the number alone (no provider id named their message): another campaign to
    #: the same numbers, awaiting reports at the same time, could have been meant.
    matched_by_number: int = 0

    @property
    def delivery_rate(self) -> float | None:
        """Delivered (or read) among the messages that went out; None before any did."""
        out = self.messages - sum(self.counts.get(s, 0) for s in NOT_SENT)
        reached = sum(self.counts.get(s, 0) for s in REACHED)
        return round(reached / out, 4) if out else None

    def as_dict(self) -> dict[str, Any]:
        def when(moment: datetime | None) -> str | None:
            return moment.isoformat() if isinstance(moment, datetime) else moment

        return {
            "campaign_id": self.campaign_id,
            "name": self.name,
            "channel": self.channel,
            "provider": self.provider,
            "state": self.state,
            "reason": self.reason,
            "messages": self.messages,
            "counts": self.counts,
            "batches": self.batches,
            "delivery_rate": self.delivery_rate,
            "fallback": self.fallbacks,
            "suppressed_at_send": self.suppressed_at_send,
            "stop_requested_at": when(self.stop_requested_at),
            "sent_after_stop": self.sent_after_stop,
            "matched_by_number": self.matched_by_number,
            "estimated_cost": self.estimated_cost,
            "reported_cost": self.reported_cost,
            "currency": self.currency,
            "planned_at": when(self.planned_at),
            "started_at": when(self.started_at),
            "first_submit": when(self.first_submit),
            "last_submit": when(self.last_submit),
            "last_report": when(self.last_report),
            "finished_at": when(self.finished_at),
        }


def campaign_row(engine: Engine, campaign_id: int) -> Any:
    """The campaign's row, or a `CampaignError` naming the id when there is none."""
    with engine.connect() as connection:
        row = connection.execute(select(C).where(C.c.id == campaign_id)).one_or_none()
    if row is None:
        raise CampaignError(f"no campaign {campaign_id}")
    return row


def state_of(engine: Engine, campaign_id: int) -> str:
    """Just the campaign's state: cheap enough to poll while a million messages are being sent."""
    return str(campaign_row(engine, campaign_id).state)


def repeats_of(engine: Engine, contacts_file: Path, message: str, since: datetime) -> int:
    """How many campaigns created since `since` from this contact file with this text reached the provider (a
    call it took, or may have): the same list sent the same words twice is worth a warning before sending."""
    reached = exists().where(B.c.campaign_id == C.c.id, B.c.state.in_(TAKEN_BATCHES))
    with engine.connect() as connection:
        return int(
            connection.execute(
                select(func.count()).where(
                    C.c.contacts_file == str(contacts_file),
                    C.c.message_template == message,
                    C.c.created_at >= since,
                    reached,
                )
            ).scalar_one()
        )


def in_flight(engine: Engine, campaign_id: int) -> int:
    """How many of the campaign's batches a sender has claimed and not yet recorded as sent."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                select(func.count()).where(B.c.campaign_id == campaign_id, B.c.state == BatchState.SENDING.value)
            ).scalar_one()
        )


def busy(engine: Engine, campaign_id: int) -> bool:
    """Whether the senders have something to do for the campaign now: a batch due, or one being sent (what
    waits for a later day, or for its window, is not now)."""
    return bool(due_batches(engine, campaign_id=campaign_id) or in_flight(engine, campaign_id))


def wait_for_senders(engine: Engine, campaign_id: int, every: float = 0.5) -> None:
    """Poll the recorded state until the senders have nothing left to do now for a running campaign (what
    waits for a later day, they send then, with nobody waiting here); then complete it if nothing is left,
    so the state read next does not depend on whether the last sender's two commits both landed."""
    while state_of(engine, campaign_id) == State.RUNNING and busy(engine, campaign_id):
        time.sleep(every)
    complete_if_idle(engine, campaign_id)


def status(engine: Engine, campaign_id: int) -> Status:
    campaign = campaign_row(engine, campaign_id)
    with engine.connect() as connection:
        counts: dict[str, int] = dict(
            connection.execute(
                select(M.c.status, func.count()).where(M.c.campaign_id == campaign_id).group_by(M.c.status)
            ).all()
        )
        batches: dict[str, int] = dict(
            connection.execute(
                select(B.c.state, func.count()).where(B.c.campaign_id == campaign_id).group_by(B.c.state)
            ).all()
        )
        first_submit, last_submit = connection.execute(
            select(func.min(B.c.submitted_at), func.max(B.c.submitted_at)).where(B.c.campaign_id == campaign_id)
        ).one()
        last_report = connection.execute(
            select(func.max(M.c.status_at)).where(M.c.campaign_id == campaign_id)
        ).scalar_one()
        reported_cost = _reported_cost(connection, campaign_id)
        in_fallback = connection.execute(
            select(func.coalesce(func.sum(B.c.size), 0)).where(
                B.c.campaign_id == campaign_id, B.c.kind == BatchKind.FALLBACK.value
            )
        ).scalar_one()
        suppressed_at_send = _count(connection, campaign_id, M.c.error == OPTED_OUT_BEFORE_SEND)
        stop = campaign.stop_requested_at
        sent_after_stop = _count(connection, campaign_id, M.c.submitted_at > stop) if stop is not None else 0
        by_number = matched_by_number(connection, campaign_id)
    return Status(
        campaign_id=campaign_id,
        name=campaign.name,
        channel=campaign.channel,
        provider=campaign.provider,
        state=campaign.state,
        reason=campaign.state_reason,
        messages=sum(counts.values()),
        counts=counts,
        batches=batches,
        estimated_cost=campaign.estimated_cost,
        currency=campaign.currency,
        started_at=campaign.started_at,
        finished_at=campaign.finished_at,
        planned_at=campaign.created_at,
        first_submit=first_submit,
        last_submit=last_submit,
        last_report=last_report,
        reported_cost=reported_cost,
        fallbacks=int(in_fallback) + counts.get(MessageStatus.FALLBACK.value, 0),
        suppressed_at_send=suppressed_at_send,
        stop_requested_at=stop,
        sent_after_stop=sent_after_stop,
        matched_by_number=by_number,
    )


def _count(connection: Any, campaign_id: int, *conditions: Any) -> int:
    """The campaign's messages that meet `conditions`."""
    return int(connection.execute(select(func.count()).where(M.c.campaign_id == campaign_id, *conditions)).scalar_one())


def _reported_cost(connection: Any, campaign_id: int) -> float | None:
    """The provider's figures: per call where it answers with a cost, else per message from its reports."""
    by_call = connection.execute(select(func.sum(B.c.reported_cost)).where(B.c.campaign_id == campaign_id)).scalar_one()
    unpriced = select(B.c.id).where(B.c.campaign_id == campaign_id, B.c.reported_cost.is_(None))
    by_report = connection.execute(select(func.sum(M.c.cost)).where(M.c.batch_id.in_(unpriced))).scalar_one()
    if by_call is None and by_report is None:
        return None
    return round(float(by_call or 0) + float(by_report or 0), 4)


def start(engine: Engine, campaign_id: int) -> Any:
    """Mark a campaign running (from draft, scheduled, paused, waiting or failed); returns its row."""
    campaign = campaign_row(engine, campaign_id)
    if campaign.state == State.RUNNING.value:
        return campaign
    if campaign.state not in STARTABLE:
        raise CampaignError(f"campaign {campaign_id} is {campaign.state}; it cannot be sent")
    with engine.begin() as connection:
        connection.execute(
            update(C)
            .where(C.c.id == campaign_id)
            .values(
                state=State.RUNNING.value,
                state_reason=None,
                wake_at=None,
                stop_requested_at=None,
                started_at=func.coalesce(C.c.started_at, func.now()),
            )
        )
    return campaign


def pause(engine: Engine, campaign_id: int, reason: str = "paused by the user") -> None:
    """Pause the campaign: no batch is claimed from now on, and a batch in hand makes no further call."""
    campaign = campaign_row(engine, campaign_id)
    if campaign.state not in PAUSABLE:
        raise CampaignError(
            f"campaign {campaign_id} is {campaign.state}; only a running, scheduled or waiting one can pause"
        )
    asked = func.coalesce(C.c.stop_requested_at, now())
    mark_campaign(engine, campaign_id, State.PAUSED, reason, PAUSABLE, stop_requested_at=asked)


def cancel(engine: Engine, campaign_id: int) -> int:
    """Cancel what has not been sent; returns how many messages will now never go.

    That is every message of a planned batch, and the `planned` messages of a
    per-recipient batch being sent (its sender claims each one before its call,
    so it skips them, and stops before its next call). A bulk batch being sent
    is left to its sender, which records what the provider took: its request
    may be with the provider already.
    """
    campaign = campaign_row(engine, campaign_id)
    if campaign.state in NOT_CANCELLABLE:
        raise CampaignError(f"campaign {campaign_id} is already {campaign.state}")
    with engine.begin() as connection:
        connection.execute(
            update(C)
            .where(C.c.id == campaign_id)
            .values(
                state=State.CANCELLED.value,
                state_reason="cancelled by the user",
                finished_at=func.now(),
                stop_requested_at=func.coalesce(C.c.stop_requested_at, now()),
            )
        )
        planned = cancel_unsent(connection, B.c.campaign_id == campaign_id, B.c.state == BatchState.PLANNED.value)
        in_hand = select(B.c.id).where(
            B.c.campaign_id == campaign_id, B.c.state == BatchState.SENDING.value, per_recipient()
        )
        unclaimed = connection.execute(
            update(M)
            .where(M.c.batch_id.in_(in_hand), M.c.status == MessageStatus.PLANNED.value)
            .values(status=MessageStatus.CANCELLED.value)
        ).rowcount
    return planned + int(unclaimed)


@dataclass(frozen=True)
class Doubt:
    """A campaign's `ambiguous` messages without a report: how many, and how many fell in doubt too recently
    for their reports to have come (those may yet be cleared), with when the last of those is due."""

    unreported: int
    recent: int
    recent_until: datetime | None


def doubt(engine: Engine, campaign_id: int, since: datetime) -> Doubt:
    """The campaign's unreported doubt, `recent` being what fell in doubt after `since`."""
    unreported = (
        M.c.campaign_id == campaign_id,
        M.c.status == MessageStatus.AMBIGUOUS.value,
        ~exists().where(models.DELIVERY_EVENTS.c.message_id == M.c.id),
    )
    with engine.connect() as connection:
        total = _count(connection, campaign_id, *unreported[1:])
        recent, latest = connection.execute(
            select(func.count(), func.max(M.c.submitted_at)).where(*unreported, M.c.submitted_at > since)
        ).one()
    if isinstance(latest, str):  # SQLite gives text
        latest = datetime.fromisoformat(latest)
    return Doubt(total, int(recent), as_utc(latest) if latest is not None else None)


def resend_ambiguous(engine: Engine, campaign_id: int, doubted_before: datetime | None = None) -> int:
    """Give back to sending the `ambiguous` messages that have no evidence of having been sent (with
    `doubted_before`, only those in doubt since before it: reports may yet clear the others).

    Evidence is a delivery report matched to the message: a recipient the
    provider reports on was sent, whatever our side lost, and is marked so. The others may or may
    not have gone out, so this is only run when the user has accepted that risk.
    Returns how many messages will be sent again.
    """
    campaign = campaign_row(engine, campaign_id)
    if campaign.state == State.CANCELLED.value:
        raise CampaignError(f"campaign {campaign_id} is cancelled")
    events = models.DELIVERY_EVENTS
    reported = exists().where(events.c.message_id == M.c.id)
    ambiguous = (M.c.campaign_id == campaign_id, M.c.status == MessageStatus.AMBIGUOUS.value)
    with engine.begin() as connection:
        connection.execute(  # a report proves the provider had it
            update(M).where(*ambiguous, reported).values(status=MessageStatus.SUBMITTED.value, error=None)
        )
        old_enough = (
            true() if doubted_before is None else or_(M.c.submitted_at.is_(None), M.c.submitted_at <= doubted_before)
        )
        count = connection.execute(
            update(M).where(*ambiguous, ~reported, old_enough).values(status=MessageStatus.PLANNED.value, error=None)
        ).rowcount
        if count:
            pending = exists().where(M.c.batch_id == B.c.id, M.c.status == MessageStatus.PLANNED.value)
            connection.execute(
                update(B)
                .where(B.c.campaign_id == campaign_id, B.c.state.in_(TAKEN_BATCHES), pending)
                .values(state=BatchState.PLANNED.value, error=None, claimed_by=None, claim_expires_at=None)
            )
            connection.execute(
                update(C)
                .where(C.c.id == campaign_id)
                .values(state=State.RUNNING.value, state_reason=None, finished_at=None, stop_requested_at=None)
            )
    return count


def retry_failed(engine: Engine, campaign_id: int) -> int:
    """Give the temporarily failed messages new batches, due now; returns how many will be sent again.

    Not retried: a message the engine itself gave up waiting for (no report
    came: it may well have arrived), and a number that has opted out since
    (it becomes `suppressed`). Each message moves once per call (the move
    re-checks its status), so two retries at the same moment do not send it twice.
    """
    campaign = campaign_row(engine, campaign_id)
    if campaign.state == State.CANCELLED.value:
        raise CampaignError(f"campaign {campaign_id} is cancelled")
    opted_out = exists().where(models.Suppression.address == M.c.address)
    failed = and_(M.c.status.in_(TEMPORARY_FAILURES), or_(M.c.error.is_(None), M.c.error != UNREPORTED))
    in_campaign = M.c.batch_id.in_(select(B.c.id).where(B.c.campaign_id == campaign_id))
    moved = 0
    with engine.begin() as connection:
        lock(connection, campaign_id)
        connection.execute(
            update(M)
            .where(in_campaign, failed, opted_out)
            .values(status=MessageStatus.SUPPRESSED.value, error="opted out since it was sent")
        )
        channels = (
            connection.execute(select(B.c.channel).where(B.c.campaign_id == campaign_id).distinct()).scalars().all()
        )
        for channel in channels:
            in_channel = select(B.c.id).where(B.c.campaign_id == campaign_id, B.c.channel == channel)
            qualifies = and_(failed, M.c.batch_id.in_(in_channel))
            ids = connection.execute(select(M.c.id).where(qualifies).order_by(M.c.id)).scalars().all()
            moved += rebatch.move(connection, campaign, ids, qualifies, channel, BatchKind.RETRY).messages
        if moved:
            connection.execute(
                update(C)
                .where(C.c.id == campaign_id)
                .values(state=State.RUNNING.value, state_reason=None, finished_at=None, stop_requested_at=None)
            )
    return moved


def overview(engine: Engine) -> list[dict[str, Any]]:
    """Every campaign with its state and how far sending has got, from the small batches table."""
    # Recipients, not sends: a fallback or retry batch sends again to recipients already counted,
    # and a cancelled batch sent nothing.
    first_send = B.c.kind == BatchKind.SEND.value
    done = func.sum(case((and_(first_send, B.c.state.in_(SENT_BATCHES)), B.c.size), else_=0))
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                C.c.id,
                C.c.name,
                C.c.channel,
                C.c.provider,
                C.c.state,
                C.c.total_messages,
                C.c.created_at,
                func.coalesce(done, 0).label("done"),
            )
            .outerjoin(B, B.c.campaign_id == C.c.id)
            .group_by(C.c.id)
            .order_by(C.c.id)
        ).all()
    return [
        {
            "campaign_id": r.id,
            "name": r.name,
            "channel": r.channel,
            "provider": r.provider,
            "state": r.state,
            "messages": r.total_messages,
            "sent": int(r.done),
            "created_at": r.created_at.isoformat() if r.created_at else None,
        }
        for r in rows
    ]
