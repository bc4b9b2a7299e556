"""The engine's notion of now, which tests (and rehearsals) can move.

Quotas roll over at midnight and send windows open at nine: to test either
without waiting, every time-dependent decision reads `now()`, which adds
`CAMPAIGN_CLOCK_OFFSET` seconds (0 in production) or an offset set in-process.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

_offset = timedelta(seconds=float(os.environ.get("CAMPAIGN_CLOCK_OFFSET", "0") or 0))


def now() -> datetime:
    return datetime.now(UTC) + _offset


def advance(seconds: float) -> None:
    """Move this process's clock forward (tests only)."""
    global _offset
    _offset += timedelta(seconds=seconds)


def reset() -> None:
    global _offset
    _offset = timedelta(0)
