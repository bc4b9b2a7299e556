"""The recovery sweep: what a dead worker left behind, and what the broker lost.

Run every CAMPAIGN_SWEEP_SECONDS (a beat entry, or the local runner between rounds). A
batch still `sending` after its lease expired belonged to a worker that died
mid-call: the provider may have accepted it, so its unsent messages become
`ambiguous`, never `planned` again. For endpoints that take one recipient per
call only the message in flight (`queued`) is uncertain; the rest of that batch
goes back to `planned` and is sent as usual. Due, unclaimed batches of running
campaigns are returned so the caller can ring their doorbell again: if the
broker lost a task, this is what finds the work; if it did not, the claim makes
the extra doorbell harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, exists, false, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from engine import clock
from engine.providers import CLIENTS
from engine.providers.base import Channel
from engine.store import models
from engine.store.states import LEASE_EXPIRED, BatchState, CampaignState, MessageStatus
from engine.store.writes import cancel_unsent, complete_if_done

B, M, C = models.BATCHES, models.MESSAGES, models.CAMPAIGNS


@dataclass(frozen=True)
class Sweep:
    ambiguous_batches: list[int]
    resumed_batches: list[int]
    due: list[tuple[int, str]]


def sweep(engine: Engine, now: datetime | None = None) -> Sweep:
    """Recover expired leases; return the due batches of running campaigns."""
    moment = now or clock.now()
    with engine.begin() as connection:
        # One statement takes the expired batches, so a worker that records its
        # answer at the same moment either wins (state no longer `sending`) or loses whole.
        expired = connection.execute(
            update(B)
            .where(B.c.state == BatchState.SENDING.value, B.c.claim_expires_at < moment)
            .values(state=BatchState.AMBIGUOUS.value, error=LEASE_EXPIRED, claimed_by=None, claim_expires_at=None)
            .returning(B.c.id, B.c.provider, B.c.channel)
        ).all()
        one_by_one = [b.id for b in expired if _one_by_one(b.provider, b.channel)]
        whole = [b.id for b in expired if b.id not in set(one_by_one)]
        if one_by_one:
            connection.execute(
                update(M)
                .where(M.c.batch_id.in_(one_by_one), M.c.status == MessageStatus.QUEUED.value)
                .values(status=MessageStatus.AMBIGUOUS.value, error=LEASE_EXPIRED, submitted_at=moment)
            )
            connection.execute(
                update(B).where(B.c.id.in_(one_by_one)).values(state=BatchState.PLANNED.value, error=None)
            )
            cancelled = exists().where(C.c.id == B.c.campaign_id, C.c.state == CampaignState.CANCELLED.value)
            cancel_unsent(connection, B.c.id.in_(one_by_one), cancelled)  # what is left of them never goes
        if whole:
            connection.execute(
                update(M)
                .where(M.c.batch_id.in_(whole), M.c.status == MessageStatus.PLANNED.value)
                .values(status=MessageStatus.AMBIGUOUS.value, error=LEASE_EXPIRED, submitted_at=moment)
            )
        complete_if_done(connection)
    return Sweep(whole, one_by_one, due_batches(engine, moment))


def due_batches(engine: Engine, now: datetime | None = None, campaign_id: int | None = None) -> list[tuple[int, str]]:
    """(batch id, provider) of planned batches that may go now, of running campaigns, in campaign order."""
    moment = now or clock.now()
    running = exists().where(C.c.id == B.c.campaign_id, C.c.state == CampaignState.RUNNING.value)
    query = select(B.c.id, B.c.provider).where(
        B.c.state == BatchState.PLANNED.value,
        (B.c.not_before.is_(None)) | (B.c.not_before <= moment),
        running,
    )
    if campaign_id is not None:
        query = query.where(B.c.campaign_id == campaign_id)
    with engine.connect() as connection:
        rows = connection.execute(query.order_by(B.c.campaign_id, B.c.seq)).all()
    return [(row.id, row.provider) for row in rows]


def per_recipient() -> ColumnElement[bool]:
    """Batches whose calls carry one recipient each, as a condition on `batches`: in such a batch only a
    `queued` message can be in a call; its `planned` ones have not left, whoever holds the batch."""
    pairs = [
        (name, channel) for name, client in CLIENTS.items() for channel in Channel if client.max_batch(channel) == 1
    ]
    return or_(false(), *(and_(B.c.provider == name, B.c.channel == channel.value) for name, channel in pairs))


def _one_by_one(provider: str, channel: str) -> bool:
    """Whether the provider's calls on this channel carry one recipient each."""
    client = CLIENTS.get(provider)
    return client is not None and client.max_batch(Channel(channel)) == 1
