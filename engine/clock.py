"""The engine's notion of now, which tests (and rehearsals) can move.

Quotas roll over at midnight and send windows open at nine: to test either
without waiting, every time-dependent decision reads `now()`, which adds
`CAMPAIGN_CLOCK_OFFSET` seconds (0 in production) and any offset set in-process.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset: timedelta | None = None


def now() -> datetime:
    global _offset
    if _offset is None:
        from engine.settings import get_settings

        _offset = timedelta(seconds=get_settings().clock_offset)
    return datetime.now(UTC) + _offset


def advance(seconds: float) -> None:
    """Move this process's clock forward (tests only)."""
    global _offset
    now()
    assert _offset is not None
    _offset += timedelta(seconds=seconds)


def reset() -> None:
    global _offset
    _offset = None
