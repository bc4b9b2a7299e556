"""Tasks: thin wrappers that take ids, never payloads, and call the engine.

Each returns a line for Flower (`workers/summaries.py`), and a send task
carries its campaign id beside its batch id so Flower shows which campaign it
works for before it has run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from engine.reports.poller import poll_due
from engine.sending.recovery import due_batches, sweep
from engine.store import models
from workers import summaries
from workers.app import app, send_queue
from workers.runtime import Runtime

log = logging.getLogger(__name__)
#: Batch ids looked up per query when ringing.
LOOKUP_CHUNK = 5_000


def campaigns_of(runtime: Runtime, batch_ids: Sequence[int]) -> dict[int, int]:
    """The campaign of each batch."""
    batches = models.BATCHES
    found: dict[int, int] = {}
    with runtime.engine.connect() as connection:
        for start in range(0, len(batch_ids), LOOKUP_CHUNK):
            chunk = batch_ids[start : start + LOOKUP_CHUNK]
            query = select(batches.c.id, batches.c.campaign_id).where(batches.c.id.in_(chunk))
            found.update({row.id: row.campaign_id for row in connection.execute(query)})
    return found


def ring(runtime: Runtime, batches: list[tuple[int, str]]) -> int:
    """Enqueue one `send_batch` per due batch on its provider's queue, unless its bell is already ringing.

    A short-lived Redis key per batch says "a task for it is queued": the sweep
    does not pile up duplicates behind a busy queue, and if Redis loses its
    data, it loses the keys with the tasks, so the next sweep rings at once.
    """
    expiry = int(runtime.settings.lease_seconds) + 60
    ringing = [(b, p) for b, p in batches if runtime.bells.set(runtime.bell_key(b), 1, nx=True, ex=expiry)]
    campaigns = campaigns_of(runtime, [batch_id for batch_id, _ in ringing])
    for batch_id, provider in ringing:
        kwargs = {"campaign_id": campaigns.get(batch_id), "batch_id": batch_id}
        send_batch.apply_async(kwargs=kwargs, queue=send_queue(provider))
    return len(ringing)


@app.task(name="campaign.start_campaign")
def start_campaign(campaign_id: int) -> str:
    """Ring the bell of each due batch of a running campaign; says how many were rung."""
    runtime = Runtime.get()
    return summaries.start_line(campaign_id, ring(runtime, due_batches(runtime.engine, campaign_id=campaign_id)))


@app.task(name="campaign.send_batch")
def send_batch(batch_id: int, campaign_id: int | None = None) -> str:
    """Send one batch (a no-op if another delivery of this task, or another worker, already has it).

    `campaign_id` is only shown (a task queued without it still sends); the line returned says what went.
    """
    runtime = Runtime.get()
    began = time.monotonic()
    try:
        outcome = runtime.run(runtime.sender.send_batch(batch_id))
    finally:
        runtime.bells.delete(runtime.bell_key(batch_id))
    return summaries.send_line(runtime.engine, batch_id, outcome, time.monotonic() - began)


@app.task(name="campaign.sweep")
def sweep_task() -> dict[str, Any]:
    """Mark batches of dead workers ambiguous and ring for due batches that have no task queued."""
    runtime = Runtime.get()
    result = sweep(runtime.engine)
    rung = ring(runtime, result.due)
    return {
        "summary": summaries.sweep_line(result, rung),
        "ambiguous": len(result.ambiguous_batches),
        "resumed": len(result.resumed_batches),
        "rung": rung,
    }


@app.task(name="campaign.poll_dlr")
def poll_dlr() -> dict[str, Any]:
    """One report round: ask the polled providers about the submitted batches that are due, apply stored
    pushes, queue RCS fallbacks, and expire what is too old."""
    runtime = Runtime.get()
    sender = runtime.sender
    max_age = timedelta(hours=runtime.settings.dlr_max_age_hours)
    wait = timedelta(seconds=runtime.settings.rcs_fallback_wait_seconds)
    result = runtime.run(poll_due(runtime.engine, sender.providers, sender.throttles, max_age, wait))
    if result.fallbacks:
        sweep_task.delay()  # ring for the SMS fallback batches now rather than at the next sweep
    counts = {
        "polled": result.polled,
        "reports": result.reports,
        "expired": result.expired,
        "pushed": result.pushed,
        "fallbacks": result.fallbacks,
    }
    return {"summary": summaries.poll_line(**counts), **counts}
