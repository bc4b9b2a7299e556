"""The Celery beat schedule: what runs every few seconds, minutes or hours (queues: `workers.app.ROUTES`).

Each entry only rings a bell: the work it finds is in the database, so a
missed tick costs a delay, never a send. A tick nobody took within its own
period expires instead of piling up behind stopped workers.
"""

from __future__ import annotations

from typing import Any

from engine.settings import Settings


def _every(task: str, seconds: float) -> dict[str, Any]:
    return {"task": task, "schedule": seconds, "options": {"expires": seconds}}


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "recovery-sweep": _every("campaign.sweep", settings.sweep_seconds),
        "delivery-reports": _every("campaign.poll_dlr", settings.dlr_poll_seconds),
        "campaign-schedules": _every("campaign.scan_schedules", settings.schedule_scan_seconds),
        "wallet-check": _every("campaign.check_wallets", settings.wallet_check_seconds),
    }
