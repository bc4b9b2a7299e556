"""The beat-driven tasks: thin wrappers that call the engine and ring the bells of what it started.

The scan's result opens with a `summary` sentence for Flower: what it started, or `nothing due`; the wallet
check's is the balance it read of each provider (`None`: it could not be read).
"""

from __future__ import annotations

from typing import Any

from engine.campaigns.schedules import scan
from engine.sending.recovery import due_batches
from engine.sending.wallet import check_wallets
from engine.settings import get_settings
from schedules.beat import beat_schedule
from workers import summaries
from workers.app import app
from workers.runtime import Runtime
from workers.tasks import ring

# `celery -A workers.app beat` imports this module (the app's `include`) before it reads the schedule.
app.conf.beat_schedule = beat_schedule(get_settings())


@app.task(name="campaign.scan_schedules")
def scan_schedules() -> dict[str, Any]:
    """Start the campaigns that have come due (scheduled, window opened, recurring) and ring their batches.

    Safe to run twice at once: each campaign is set running by one scan only. If
    this task dies after that, the recovery sweep rings the batches instead.
    """
    runtime = Runtime.get()
    result = scan(runtime.engine, runtime.settings)
    rung = sum(ring(runtime, due_batches(runtime.engine, campaign_id=c)) for c in result.campaigns)
    return {
        "summary": summaries.scan_line(result.started, result.woken, result.planned, result.refused, rung),
        "started": len(result.started),
        "woken": len(result.woken),
        "planned": len(result.planned),
        "refused": len(result.refused),
        "rung": rung,
    }


@app.task(name="campaign.check_wallets")
def check_wallets_task() -> dict[str, float | None]:
    """Log a warning for each provider whose balance is under CAMPAIGN_WALLET_WARN_BELOW; returns what is left."""
    runtime = Runtime.get()
    sender = runtime.sender
    readings = runtime.run(check_wallets(sender.providers, sender.throttles, runtime.settings.wallet_warn_below))
    return {reading.provider: reading.left for reading in readings}
