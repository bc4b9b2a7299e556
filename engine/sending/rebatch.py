"""Giving messages a second send: moved out of their batch into new batches that are sent like any other.

An RCS message that did not arrive goes again as SMS, a temporary failure is
retried: in both cases the message row (the recipient) moves to a new batch of
its own kind, due at once, and the senders pick that batch up as they pick up
any planned batch. The move is one conditional UPDATE whose condition says the
message still qualifies, so two processes deciding the same thing at the same
moment move each message once, and a message never qualifies twice for the
same reason (a fallback leaves the RCS batch; a retry starts from `planned`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from sqlalchemy import Connection, func, insert, select, update

from engine.clock import now
from engine.planning.pricing import PriceTable, PricingError
from engine.planning.render import encode
from engine.providers import client_class
from engine.providers.base import Channel
from engine.store import models
from engine.store.states import BatchKind, BatchState, CampaignState, MessageStatus
from engine.store.writes import lock

M, B, C = models.MESSAGES, models.BATCHES, models.CAMPAIGNS
S = MessageStatus


class Moved(NamedTuple):
    messages: int
    batches: list[int]


def move(
    connection: Connection,
    campaign: Any,
    message_ids: Sequence[int],
    qualifies: Any,
    channel: str,
    kind: BatchKind,
    prices: PriceTable | None = None,
) -> Moved:
    """Move the messages that still satisfy `qualifies` into new `kind` batches on `channel`.

    Runs in the caller's transaction, which should have begun with `lock`. The
    new batches are `planned` and due now; a campaign already marked completed
    is running again.
    """
    if not message_ids:
        return Moved(0, [])
    lock(connection, campaign.id)
    prices = prices or load_prices()
    limit = client_class(campaign.provider).batch_limit(Channel(channel))
    seq = connection.execute(select(func.coalesce(func.max(B.c.seq), 0)).where(B.c.campaign_id == campaign.id))
    next_seq = int(seq.scalar_one()) + 1
    moved, batches = 0, []
    for start in range(0, len(message_ids), limit):
        chunk = list(message_ids[start : start + limit])
        batch_id = connection.execute(
            insert(B)
            .values(
                campaign_id=campaign.id,
                seq=next_seq,
                channel=channel,
                provider=campaign.provider,
                size=0,
                segments=0,
                estimated_cost=0.0,
                send_day=0,
                state=BatchState.PLANNED.value,
                kind=kind.value,
            )
            .returning(B.c.id)
        ).scalar_one()
        count = 0
        for part in range(0, len(chunk), 1000):  # bounded IN lists
            ids = chunk[part : part + 1000]
            count += connection.execute(
                update(M)
                .where(M.c.id.in_(ids), qualifies)
                .values(
                    batch_id=batch_id,
                    status=S.PLANNED.value,
                    error=None,
                    provider_message_id=None,
                    submitted_at=None,
                    channel_used=None,
                    cost=None,
                )
            ).rowcount
        if not count:
            connection.execute(B.delete().where(B.c.id == batch_id))
            continue
        units, cost = _estimate(connection, batch_id, campaign.provider, channel, prices)
        connection.execute(update(B).where(B.c.id == batch_id).values(size=count, segments=units, estimated_cost=cost))
        moved += count
        batches.append(batch_id)
        next_seq += 1
    if moved:
        connection.execute(
            update(C)
            .where(C.c.id == campaign.id, C.c.state == CampaignState.COMPLETED.value)
            .values(state=CampaignState.RUNNING.value, finished_at=None, updated_at=now())
        )
    return Moved(moved, batches)


def load_prices() -> PriceTable | None:
    """The price table for estimates, or None where it cannot be read (the estimate is then 0)."""
    try:
        return PriceTable.load()
    except PricingError:
        return None


def _estimate(
    connection: Connection, batch_id: int, provider: str, channel: str, prices: PriceTable | None
) -> tuple[int, float]:
    """Segments and estimated cost of a new batch, from the texts it will send (the planner's own measures)."""
    rows = connection.execute(
        select(M.c.fallback_body if channel == "sms" else M.c.body, M.c.body, M.c.segments).where(
            M.c.batch_id == batch_id
        )
    ).all()
    if channel == "sms":
        encoded = encode(pa.array([sms or body for sms, body, _ in rows], pa.string()))
        ucs2, units = encoded.ucs2, encoded.segments
    else:
        ucs2, units = np.zeros(len(rows), dtype=bool), np.array([row.segments for row in rows], dtype=np.int64)
    if prices is None:
        return int(units.sum()), 0.0
    try:
        costs, _ = prices.costs(provider, channel, ucs2, units)
    except PricingError:
        return int(units.sum()), 0.0
    return int(units.sum()), float(costs.sum())
