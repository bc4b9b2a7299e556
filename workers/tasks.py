"""Tasks: thin wrappers that take ids, never payloads, and call the engine."""

from __future__ import annotations

import logging
from datetime import timedelta

from engine.reports.poller import poll_due
from engine.sending.recovery import due_batches, sweep
from workers.app import app, send_queue
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def ring(runtime: Runtime, batches: list[tuple[int, str]]) -> int:
    """Enqueue one `send_batch` per due batch on its provider's queue, unless its bell is already ringing.

    A short-lived Redis key per batch says "a task for it is queued": the sweep
    does not pile up duplicates behind a busy queue, and if Redis loses its
    data, it loses the keys with the tasks, so the next sweep rings at once.
    """
    rung = 0
    for batch_id, provider in batches:
        if runtime.bells.set(runtime.bell_key(batch_id), 1, nx=True, ex=int(runtime.settings.lease_seconds) + 60):
            send_batch.apply_async((batch_id,), queue=send_queue(provider))
            rung += 1
    return rung


@app.task(name="campaign.start_campaign")
def start_campaign(campaign_id: int) -> int:
    """Ring the bell of each due batch of a running campaign; returns how many were rung."""
    runtime = Runtime.get()
    return ring(runtime, due_batches(runtime.engine, campaign_id=campaign_id))


@app.task(name="campaign.send_batch")
def send_batch(batch_id: int) -> str:
    """Send one batch (a no-op if another delivery of this task, or another worker, already has it)."""
    runtime = Runtime.get()
    try:
        return runtime.run(runtime.sender.send_batch(batch_id))
    finally:
        runtime.bells.delete(runtime.bell_key(batch_id))


@app.task(name="campaign.sweep")
def sweep_task() -> dict[str, int]:
    """Mark batches of dead workers ambiguous and ring for due batches that have no task queued."""
    runtime = Runtime.get()
    result = sweep(runtime.engine)
    rung = ring(runtime, result.due)
    return {"ambiguous": len(result.ambiguous_batches), "resumed": len(result.resumed_batches), "rung": rung}


@app.task(name="campaign.poll_dlr")
def poll_dlr() -> dict[str, int]:
    """One report round: ask the polled providers about the submitted batches that are due, apply stored
    pushes, queue RCS fallbacks, and expire what is too old."""
    runtime = Runtime.get()
    sender = runtime.sender
    max_age = timedelta(hours=runtime.settings.dlr_max_age_hours)
    wait = timedelta(seconds=runtime.settings.rcs_fallback_wait_seconds)
    result = runtime.run(poll_due(runtime.engine, sender.providers, sender.throttles, max_age, wait))
    if result.fallbacks:
        sweep_task.delay()  # ring for the SMS fallback batches now rather than at the next sweep
    return {
        "polled": result.polled,
        "reports": result.reports,
        "expired": result.expired,
        "pushed": result.pushed,
        "fallbacks": result.fallbacks,
    }
