"""Tasks: thin wrappers that take ids, never payloads, and call the engine."""

from __future__ import annotations

import logging

from engine.campaigns import start
from engine.recovery import due_batches, mark_rung, sweep
from workers.app import app, send_queue
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def ring(batches: list[tuple[int, str]]) -> None:
    """Enqueue one `send_batch` per due batch, on its provider's queue."""
    for batch_id, provider in batches:
        send_batch.apply_async((batch_id,), queue=send_queue(provider))


@app.task(name="campaign.start_campaign")
def start_campaign(campaign_id: int) -> int:
    """Mark the campaign running and ring the bell of each due batch; returns how many."""
    runtime = Runtime.get()
    start(runtime.engine, campaign_id)
    batches = due_batches(runtime.engine, campaign_id=campaign_id)
    mark_rung(runtime.engine, [batch_id for batch_id, _ in batches])
    ring(batches)
    return len(batches)


@app.task(name="campaign.send_batch")
def send_batch(batch_id: int) -> str:
    """Send one batch (a no-op if another delivery of this task, or another worker, already has it)."""
    runtime = Runtime.get()
    return runtime.run(runtime.sender.send_batch(batch_id))


@app.task(name="campaign.sweep")
def sweep_task() -> dict[str, int]:
    """Mark batches of dead workers ambiguous and ring again for due batches nobody has claimed."""
    runtime = Runtime.get()
    result = sweep(runtime.engine, stale_after=runtime.settings.sweep_seconds)
    ring(result.due)
    return {"ambiguous": len(result.ambiguous_batches), "resumed": len(result.resumed_batches), "rung": len(result.due)}
