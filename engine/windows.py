"""Send windows: the hours of the day, in one time zone, in which a campaign may send.

India lets promotional SMS go only between 09:00 and 21:00 IST, and a
marketer may want narrower hours of their own. A window is checked where a
batch is claimed, because that is the one moment every sender (a worker, local
mode) passes through: a batch that comes due outside its campaign's window is
not sent and never failed for it; it is put off to the window's next opening,
and its campaign waits (`waiting`, with the time in its reason) until then.

Times are wall-clock times in the window's zone, so a window keeps its hours
across daylight-saving changes; a window may run past midnight (22:00-06:00).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import CampaignError

#: The zone of India's regulation on promotional SMS, whatever zone the user plans in.
INDIA = "Asia/Kolkata"
_TIME = r"(\d{1,2})(?::(\d{2}))?"
_WINDOW = re.compile(rf"^\s*{_TIME}\s*[-\u2013]\s*{_TIME}\s*$")


class WindowError(CampaignError):
    """A window or time zone the user wrote cannot be read."""


def day_of(moment: datetime) -> str:
    """The UTC day of `moment`: providers count daily quotas in UTC."""
    return moment.astimezone(UTC).date().isoformat()


def next_day(moment: datetime) -> datetime:
    """Midnight UTC after `moment`, when a daily quota starts again."""
    today = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=1)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`, or an error that says what is expected."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(f"{name!r} is not a time zone name (for example Asia/Kolkata, Europe/London, UTC)") from None


def as_utc(moment: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite gives them back naive, in UTC as written)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def local_text(moment: datetime, tz: str) -> str:
    """`moment` as the wall clock in `tz` reads it, with the zone's abbreviation: 2026-11-25 09:00 IST."""
    return f"{as_utc(moment).astimezone(zone(tz)):%Y-%m-%d %H:%M %Z}"


@dataclass(frozen=True)
class SendWindow:
    start: time
    end: time
    tz: str

    @classmethod
    def parse(cls, text: str, tz: str) -> SendWindow:
        """`09:00-21:00` (or `9-21`) in the zone `tz`."""
        match = _WINDOW.match(text)
        if not match:
            raise WindowError(f"window {text!r} cannot be read: write it as 09:00-21:00")
        hour1, minute1, hour2, minute2 = (int(g or 0) for g in match.groups())
        if hour1 > 23 or hour2 > 23 or minute1 > 59 or minute2 > 59:
            raise WindowError(f"window {text!r}: hours go from 00 to 23 and minutes from 00 to 59")
        start, end = time(hour1, minute1), time(hour2, minute2)
        if start == end:
            raise WindowError(f"window {text!r} opens and closes at the same time; leave it out to send at any time")
        zone(tz)
        return cls(start, end, tz.strip())

    @classmethod
    def of(cls, row: Any) -> SendWindow | None:
        """The window stored on a campaign row (or None: it may send at any time)."""
        if not row.window_start or not row.window_end or not row.window_tz:
            return None
        return cls(time.fromisoformat(row.window_start), time.fromisoformat(row.window_end), row.window_tz)

    def columns(self) -> dict[str, str]:
        """The campaign columns that store this window."""
        return {"window_start": f"{self.start:%H:%M}", "window_end": f"{self.end:%H:%M}", "window_tz": self.tz}

    def as_dict(self) -> dict[str, str]:
        return {"start": f"{self.start:%H:%M}", "end": f"{self.end:%H:%M}", "tz": self.tz}

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.tz}"

    def is_open(self, moment: datetime) -> bool:
        local = as_utc(moment).astimezone(zone(self.tz)).time()
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_open(self, moment: datetime) -> datetime:
        """`moment` itself if the window is open then, else the window's next opening (UTC)."""
        moment = as_utc(moment)
        if self.is_open(moment):
            return moment
        here = zone(self.tz)
        local = moment.astimezone(here)
        day: date = local.date() if local.time() < self.start else local.date() + timedelta(days=1)
        return datetime.combine(day, self.start, tzinfo=here).astimezone(UTC)

    def within(self, other: SendWindow) -> bool:
        """Whether every moment of this window is inside `other` (known only for same-zone daytime windows)."""
        return (
            self.tz == other.tz
            and self.start < self.end
            and other.start < other.end
            and other.start <= self.start
            and self.end <= other.end
        )


def first_send(window: SendWindow | None, not_before: datetime) -> datetime:
    """When sending can begin: `not_before`, or the window's first opening after it."""
    return window.next_open(not_before) if window else as_utc(not_before)


@dataclass(frozen=True)
class Timing:
    """When a plan may send: its window (and why that one), its first send, and when each day's part may begin.

    A value of its own so that the planner, which times a plan from now, and a
    schedule, which times it again from its first run, give the summary the
    same thing, and the `sends` line is read from it in one place.
    """

    #: The hours it may send in, None: any hour.
    window: SendWindow | None
    #: Why the window is this one when the plan did not ask for it (promotional SMS to India), else None.
    why: str | None
    #: The first moment it may send (UTC).
    starts_at: datetime
    #: When each day's part may begin at the earliest (UTC), the first day first.
    day_starts: tuple[datetime, ...]

    def window_json(self) -> dict[str, str | None] | None:
        """The window as the plan summary's JSON gives it, with why."""
        return {**self.window.as_dict(), "why": self.why} if self.window else None


def describe_timing(window: SendWindow | None, why: str | None, not_before: datetime, days: int) -> Timing:
    """When a plan of `days` days may send and when each day's part goes at the earliest.

    Days past the first are those a daily quota puts off: each may begin once
    the quota has rolled over (midnight UTC) that many times, and the window is open.
    """
    start = first_send(window, not_before)
    day_starts = [start]
    for index in range(1, days):
        day_starts.append(first_send(window, next_day(start) + timedelta(days=index - 1)))
    return Timing(window, why if window else None, start, tuple(day_starts[:days]))


def timing_text(timing: Timing, now: datetime, tz: str | None = None) -> str | None:
    """The plan's "sends" line: its window and when it starts, or None when it sends now at any hour.

    Without a window the start is shown in `tz` (a schedule's zone), else in UTC.
    """
    window, start = timing.window, timing.starts_at
    later = start > as_utc(now) + timedelta(minutes=1)
    if window is None and not later:
        return None
    zone_name = window.tz if window else tz or "UTC"
    hours = str(window) if window else "at any hour"
    why = f" ({timing.why})" if window and timing.why else ""
    when = f"starts at {local_text(start, zone_name)}" if later else "starts now"
    return f"{hours}{why}; {when}"
