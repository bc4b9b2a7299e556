"""Small, set-based writes shared by sending, its recovery and the campaign's steps: the campaign lock,
completion, cancelling what was not sent, and chunked message updates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, case, exists, func, select, text, update
from sqlalchemy.sql.elements import ColumnElement

from engine.clock import now
from engine.store import models
from engine.store.db import bulk_insert, driver_connection
from engine.store.models import CAMPAIGNS
from engine.store.states import NOT_SENT, PENDING_BATCHES, UNSENT, BatchState, CampaignState, MessageStatus


def mark_campaign(
    engine: Engine,
    campaign_id: int,
    state: CampaignState,
    reason: str | None,
    only_from: Sequence[str] = (CampaignState.RUNNING.value,),
    **values: Any,
) -> bool:
    """Move a campaign to `state` if it is in one of `only_from` (a cancelled campaign is not paused by a 402),
    setting `values` on it too."""
    with engine.begin() as connection:
        return (
            connection.execute(
                update(models.Campaign)
                .where(models.Campaign.id == campaign_id, models.Campaign.state.in_(only_from))
                .values(state=state.value, state_reason=reason, **values)
            ).rowcount
            == 1
        )


def complete_if_done(connection: Connection, campaign_id: Any = None) -> None:
    """Running campaigns (one, or all) with no batch left to send are complete; their reports may still come.

    The candidates are locked first and checked again in a second statement:
    on PostgreSQL a statement sees the batches committed before it began, so a
    fallback or retry batch added while this waited for the campaign's row is
    seen by the second look, and the campaign stays running for it.
    """
    batch, campaign = models.BATCHES, models.CAMPAIGNS
    pending = exists().where(batch.c.campaign_id == campaign.c.id, batch.c.state.in_(PENDING_BATCHES))
    candidates = select(campaign.c.id).where(campaign.c.state == CampaignState.RUNNING.value, ~pending)
    if campaign_id is not None:
        candidates = candidates.where(campaign.c.id == campaign_id)
    ids = connection.execute(candidates.with_for_update()).scalars().all()
    if ids:
        connection.execute(
            update(campaign)
            .where(campaign.c.id.in_(ids), campaign.c.state == CampaignState.RUNNING.value, ~pending)
            .values(state=CampaignState.COMPLETED.value, finished_at=func.now())
        )


def cancel_unsent(connection: Connection, *batches: ColumnElement[bool]) -> int:
    """Cancel the unsent messages (planned, or claimed for a call that never left) of the batches that match
    `batches`, and those batches; returns how many messages were cancelled.

    A batch some of whose recipients went already (a per-recipient batch paused
    halfway) ends `submitted` rather than `cancelled`, so the reports of those
    recipients are still gathered.
    """
    batch, message = models.BATCHES, models.MESSAGES
    chosen = select(batch.c.id).where(*batches)
    cancelled = connection.execute(
        update(message)
        .where(message.c.batch_id.in_(chosen), message.c.status.in_(UNSENT))
        .values(status=MessageStatus.CANCELLED.value)
    ).rowcount
    went = exists().where(message.c.batch_id == batch.c.id, message.c.status.not_in(NOT_SENT))
    connection.execute(
        update(batch)
        .where(*batches)
        .values(
            state=case((went, BatchState.SUBMITTED.value), else_=BatchState.CANCELLED.value),
            submitted_at=case((went, func.coalesce(batch.c.submitted_at, now())), else_=batch.c.submitted_at),
            claimed_by=None,
            claim_expires_at=None,
        )
    )
    return int(cancelled)


def update_messages(connection: Connection, message_ids: Sequence[int], **values: Any) -> None:
    """Set `values` on these messages, a few thousand ids per statement (bound parameters have limits)."""
    message = models.MESSAGES
    for start in range(0, len(message_ids), 5_000):
        connection.execute(update(message).where(message.c.id.in_(message_ids[start : start + 5_000])).values(**values))


def set_provider_ids(connection: Connection, pairs: Sequence[tuple[int, str]]) -> None:
    """Store provider message ids by message id in one pass: `executemany` on SQLite, COPY + one UPDATE on PostgreSQL.

    A loop of single-row UPDATEs costs minutes per million rows on PostgreSQL;
    a temporary table filled by COPY and joined once costs seconds.
    """
    if not pairs:
        return
    if connection.dialect.name == "sqlite":
        cursor = driver_connection(connection).cursor()
        try:
            cursor.executemany("UPDATE messages SET provider_message_id = ? WHERE id = ?", [(p, i) for i, p in pairs])
        finally:
            cursor.close()
        return
    connection.execute(text("CREATE TEMP TABLE IF NOT EXISTS provider_ids (id BIGINT, pid TEXT) ON COMMIT DELETE ROWS"))
    bulk_insert(connection, "provider_ids", {"id": [i for i, _ in pairs], "pid": [p for _, p in pairs]})
    connection.execute(
        text(
            "UPDATE messages SET provider_message_id = provider_ids.pid"
            " FROM provider_ids WHERE messages.id = provider_ids.id"
        )
    )


def lock(connection: Connection, campaign_id: Any) -> None:
    """Take the campaign's row for this transaction, so one mover at a time reads its next batch number.

    The receiver, the poller, a worker and a user may all move messages of one
    campaign. A write is what locks on both databases: the row on PostgreSQL,
    the database on SQLite, which is why it must be the transaction's first
    statement there (a transaction that read first cannot take the lock later
    if another wrote meanwhile).
    """
    connection.execute(update(CAMPAIGNS).where(CAMPAIGNS.c.id == campaign_id).values(updated_at=now()))


def complete_if_idle(engine: Engine, campaign_id: Any) -> None:
    """Complete the running campaign if no batch is left to send, in a transaction of its own.

    A sender takes this step after its batch's commit: checked inside the
    batch's own transaction, two workers closing the last two batches at the
    same moment would each still see the other's as `sending`, and the
    campaign would stay running for ever. Whoever waits for the senders takes
    it too, so what it then reads does not depend on whether the sender's two
    commits (the batch, then the campaign) both landed before it looked.
    """
    with engine.begin() as connection:
        lock(connection, campaign_id)  # a write first: on SQLite, a transaction that read first cannot write
        complete_if_done(connection, campaign_id)
