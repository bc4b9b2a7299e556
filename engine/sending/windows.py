"""Send windows where a batch is claimed: a batch due outside its campaign's window is put off, never sent.

The window itself (`engine.windows.SendWindow`) is plain time arithmetic; this
is the one place it meets the database, because claiming a batch is the one
moment every sender (a worker, local mode) passes through.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select, update

from engine.store import models
from engine.store.states import BatchState, CampaignState
from engine.windows import SendWindow, local_text


def defer_outside_window(engine: Engine, batch_id: int, moment: datetime) -> bool:
    """Whether the batch's campaign may send at `moment`; if not, put the batch off and let the campaign wait.

    The batch (if still planned and due) gets `not_before` at the window's next
    opening, and a running campaign becomes `waiting` with `wake_at` then: the
    scheduler sets it running again at that time, or `campaign resume` does.
    """
    campaigns, batches = models.CAMPAIGNS, models.BATCHES
    with engine.connect() as connection:
        row = connection.execute(
            select(campaigns.c.id, campaigns.c.window_start, campaigns.c.window_end, campaigns.c.window_tz)
            .join(batches, batches.c.campaign_id == campaigns.c.id)
            .where(batches.c.id == batch_id)
        ).one_or_none()
    if row is None:  # no such batch: nothing to put off
        return True
    window = SendWindow.of(row)
    if window is None or window.is_open(moment):
        return True
    opens = window.next_open(moment)
    reason = (
        f"outside its send window {window}: goes on at {local_text(opens, window.tz)} by itself where the "
        f"scheduler runs (beat, or `campaign schedule run`), or with `campaign resume {row.id}` then"
    )
    with engine.begin() as connection:
        deferred = connection.execute(
            update(batches)
            .where(
                batches.c.id == batch_id,
                batches.c.state == BatchState.PLANNED.value,
                batches.c.not_before.is_(None) | (batches.c.not_before <= moment),
            )
            .values(not_before=opens)
        ).rowcount
        if not deferred:  # not this one's to put off (already sent, or taken): the campaign goes on as it is
            return False
        connection.execute(
            update(campaigns)
            .where(campaigns.c.id == row.id, campaigns.c.state == CampaignState.RUNNING.value)
            .values(state=CampaignState.WAITING.value, state_reason=reason, wake_at=opens)
        )
    return False
