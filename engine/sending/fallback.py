"""The engine's SMS fallback for RCS: sent once, for the messages RCS did not bring, never for one it did.

Where the provider was not asked for its own `smsFallback`, an RCS message
gets the campaign's SMS fallback when its device cannot take RCS (found before
sending, `route_now`), or when its report says `incompatible` or `failed`, or
when no delivery came within the fallback wait (`due`). The message moves to
a new `fallback` SMS batch (`engine.sending.rebatch`): once out of its RCS batch it
never qualifies again, and a delivered or read message never qualifies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, false, or_, select

from engine.clock import now
from engine.providers import names_where
from engine.providers.base import Channel
from engine.sending import rebatch
from engine.store import models
from engine.store.states import MOVABLE, NOT_ARRIVED, UNCONFIRMED, BatchKind, BatchState, MessageStatus
from engine.store.writes import lock

log = logging.getLogger(__name__)
M, B, C = models.MESSAGES, models.BATCHES, models.CAMPAIGNS
S = MessageStatus
#: The providers whose RCS fallback the engine routes where the call does not ask for the provider's own (the
#: others keep theirs in the account's settings).
ROUTING = names_where(lambda client: client.sms_fallback_per_call)


def _in_engine_rcs_batch() -> Any:
    """In an RCS batch, of a provider that takes a fallback per call, whose call did not ask the provider for
    its own (the engine routes only those; another provider's RCS fallback is set in its own dashboard)."""
    return exists().where(
        B.c.id == M.c.batch_id,
        B.c.channel == Channel.RCS.value,
        B.c.provider.in_(ROUTING),
        B.c.provider_fallback == false(),
    )


def route_now(connection: Connection, campaign: Any, message_ids: Sequence[int]) -> rebatch.Moved:
    """Before sending: move these planned messages (devices without RCS) to an SMS fallback batch."""
    qualifies = and_(M.c.status == S.PLANNED.value, M.c.fallback_body.is_not(None), _in_engine_rcs_batch())
    return rebatch.move(connection, campaign, message_ids, qualifies, Channel.SMS.value, BatchKind.FALLBACK)


def due(engine: Engine, wait: timedelta, max_age: timedelta, campaign_ids: Iterable[int] | None = None) -> int:
    """After sending: give the SMS fallback to each RCS message that did not arrive, or not within `wait`.

    The search starts from the engine-routed RCS batches submitted, or settled,
    within `max_age` (a round missed while nothing ran is made up by the next):
    through the batch index, never the whole messages table. Returns how many messages were moved to fallback
    batches (they are sent by whoever sends planned batches: the workers after
    the next sweep, or local mode).
    """
    moment = now()
    cutoff = moment - wait
    qualifies = and_(
        M.c.fallback_body.is_not(None),
        M.c.submitted_at.is_not(None),  # the provider took it: a refused call is not a missed delivery
        _in_engine_rcs_batch(),
        or_(M.c.status.in_(NOT_ARRIVED), and_(M.c.status.in_(UNCONFIRMED), M.c.submitted_at < cutoff)),
    )
    recent = select(B.c.id, B.c.campaign_id).where(
        B.c.channel == Channel.RCS.value,
        B.c.provider.in_(ROUTING),
        B.c.provider_fallback == false(),
        B.c.submitted_at >= moment - max_age,
        or_(
            B.c.state == BatchState.SUBMITTED.value,
            and_(B.c.state == BatchState.SETTLED.value, B.c.settled_at >= moment - max_age),
        ),
    )
    if campaign_ids is not None:
        recent = recent.where(B.c.campaign_id.in_(list(campaign_ids)))
    moved = 0
    with engine.connect() as connection:
        batches: dict[int, list[int]] = {}
        for batch_id, campaign_id in connection.execute(recent).all():
            batches.setdefault(campaign_id, []).append(batch_id)
    prices = rebatch.load_prices()
    for campaign_id, batch_ids in batches.items():
        with engine.begin() as connection:  # one campaign per transaction: its rows are locked briefly
            lock(connection, campaign_id)
            campaign = connection.execute(
                select(C).where(C.c.id == campaign_id, C.c.fallback_template.is_not(None), C.c.state.in_(MOVABLE))
            ).first()
            if campaign is None:
                continue
            ids = (
                connection.execute(select(M.c.id).where(M.c.batch_id.in_(batch_ids), qualifies).order_by(M.c.id))
                .scalars()
                .all()
            )
            sms = Channel.SMS.value
            moved_now = rebatch.move(connection, campaign, ids, qualifies, sms, BatchKind.FALLBACK, prices)
            count = moved_now.messages
        if count:
            log.info("campaign %s: %d RCS messages did not arrive; their SMS fallback is queued", campaign_id, count)
        moved += count
    return moved
