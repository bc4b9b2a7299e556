"""Campaigns that start later: once at a set time (`--at`), or again at each time of a cron expression (`--every`).

The database holds every schedule; a scanner (the Celery beat entry in
`schedules/`, or `campaign schedule run`) only asks every few seconds what has
come due, so a scheduler that restarts, or two that run at once, lose and
double nothing. Each step that matters is one conditional UPDATE:

- a campaign planned for later is `scheduled` with `scheduled_at`; it starts
  with `state = 'scheduled' AND scheduled_at <= now -> running`;
- a campaign `waiting` for its send window to open goes on the same way at `wake_at`;
- a recurring schedule's occurrence is taken by moving `next_run_at` on and
  counting `runs` up where `runs` is still what the scanner read. Only the
  scanner that took it plans the new campaign, from the saved options, the
  contact file read afresh. An occurrence is run at most once: if planning
  fails, or the scanner dies while planning, that occurrence is not retried
  (the reason is kept on the schedule) and the next one runs as usual.

When no scheduler ran for a while, a scheduled campaign starts late (it was
planned and confirmed, and has no other chance), but a recurring occurrence
more than `MISFIRE_GRACE` late is skipped: the next one comes anyway.

Nothing here uses a broker's countdown: on Redis, a delayed task that outlives
the visibility timeout is delivered again and again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter
from sqlalchemy import Engine, func, select, update

from engine import clock
from engine.campaigns.lifecycle import cancel
from engine.errors import CampaignError
from engine.planning.options import PlanOptions, plan_from_options
from engine.planning.planner import save_plan
from engine.settings import Settings
from engine.store import models
from engine.store.states import CampaignState, ScheduleState
from engine.windows import as_utc, local_text, zone

log = logging.getLogger(__name__)

C, S = models.CAMPAIGNS, models.SCHEDULES
State = CampaignState
#: An occurrence found later than this (no scheduler was running then) is skipped, not sent late.
MISFIRE_GRACE = timedelta(hours=1)
#: Recurring schedules are shown and cancelled as `r<id>`, apart from campaign ids.
RECURRING = "r"


class ScheduleError(CampaignError):
    """A time, cron expression or schedule the user named is wrong or unknown."""


def parse_at(text: str, tz: str, now: datetime) -> datetime:
    """`--at` as a UTC time: `2026-11-24 10:00` in `tz` (or with its own offset); refused if past or unreadable."""
    here = zone(tz)
    try:
        written = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleError(f"--at {text!r} is not a date and time: write it as 2026-11-24 10:00") from None
    if written.tzinfo is None:
        moment = written.replace(tzinfo=here)
        if moment.astimezone(UTC).astimezone(here).replace(tzinfo=None) != written:
            raise ScheduleError(f"--at {text!r} does not exist in {tz}: the clocks skip it that day")
    else:
        moment = written
    moment = moment.astimezone(UTC)
    if moment <= now:
        raise ScheduleError(f"--at {text!r} ({local_text(moment, tz)}) is in the past: it is now {local_text(now, tz)}")
    return moment


def next_occurrence(cron: str, tz: str, after: datetime) -> datetime:
    """The first time `cron` (read in `tz`, so 10:00 stays 10:00 across daylight saving) fires after `after`, UTC."""
    if not croniter.is_valid(cron):
        raise ScheduleError(
            f"--every {cron!r} is not a cron expression: five fields, minute hour day month weekday, "
            "as in '0 10 * * MON' (Mondays at 10:00)"
        )
    start = as_utc(after).astimezone(zone(tz))
    return as_utc(croniter(cron, start).get_next(datetime))


def schedule_campaign(engine: Engine, campaign_id: int, at: datetime, tz: str) -> None:
    """Put a planned (draft) campaign off until `at`: the scanner starts it then."""
    with engine.begin() as connection:
        moved = connection.execute(
            update(C)
            .where(C.c.id == campaign_id, C.c.state == State.DRAFT.value)
            .values(
                state=State.SCHEDULED.value,
                scheduled_at=at,
                scheduled_tz=tz,
                state_reason=f"starts at {local_text(at, tz)}",
            )
        ).rowcount
    if not moved:
        raise ScheduleError(f"campaign {campaign_id} is not a draft: only a campaign not yet started can be scheduled")


def save_recurring(engine: Engine, options: PlanOptions, cron: str, tz: str, now: datetime) -> tuple[int, datetime]:
    """Store a recurring schedule of these plan options; returns its id and its first run (UTC)."""
    first = next_occurrence(cron, tz, now)
    models.bounded(options.name, S.c.name, "schedule name")
    models.bounded(cron.strip(), S.c.cron, "schedule")
    with engine.begin() as connection:
        schedule_id = connection.execute(
            S.insert()
            .values(
                name=options.name,
                cron=cron.strip(),
                tz=zone(tz).key,
                definition=options.to_json(),
                state=ScheduleState.ACTIVE.value,
                next_run_at=first,
                runs=0,
            )
            .returning(S.c.id)
        ).scalar_one()
    return schedule_id, first


@dataclass
class Scan:
    """What one look at the schedules did: campaign ids set running, and recurring runs that failed."""

    started: list[int] = field(default_factory=list)
    woken: list[int] = field(default_factory=list)
    planned: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)

    @property
    def campaigns(self) -> list[int]:
        """Every campaign now running because of this scan: their batches need their bells rung."""
        return [*self.started, *self.woken, *self.planned]


def start_due(engine: Engine, now: datetime) -> list[int]:
    """Set running every scheduled campaign whose time has come; each is returned to one caller only."""
    with engine.begin() as connection:
        return list(
            connection.execute(
                update(C)
                .where(C.c.state == State.SCHEDULED.value, C.c.scheduled_at <= now)
                .values(state=State.RUNNING.value, state_reason=None, started_at=func.coalesce(C.c.started_at, now))
                .returning(C.c.id)
            ).scalars()
        )


def wake_due(engine: Engine, now: datetime) -> list[int]:
    """Set running again every campaign that waited for its send window, now open."""
    with engine.begin() as connection:
        return list(
            connection.execute(
                update(C)
                .where(C.c.state == State.WAITING.value, C.c.wake_at <= now)
                .values(state=State.RUNNING.value, state_reason=None, wake_at=None)
                .returning(C.c.id)
            ).scalars()
        )


def run_recurring(engine: Engine, settings: Settings, now: datetime, result: Scan) -> None:
    """Take each due occurrence of the recurring schedules, and plan and start its campaign."""
    with engine.connect() as connection:
        due = connection.execute(
            select(S).where(S.c.state == ScheduleState.ACTIVE.value, S.c.next_run_at <= now).order_by(S.c.next_run_at)
        ).all()
    for schedule in due:
        occurrence = as_utc(schedule.next_run_at)
        following = next_occurrence(schedule.cron, schedule.tz, max(now, occurrence))
        with engine.begin() as connection:
            taken = connection.execute(
                update(S)
                .where(S.c.id == schedule.id, S.c.state == ScheduleState.ACTIVE.value, S.c.runs == schedule.runs)
                .values(
                    runs=schedule.runs + 1,
                    next_run_at=following,
                    last_run_at=occurrence,
                    last_error=None,
                    updated_at=now,
                )
            ).rowcount
        if not taken:
            continue
        if now - occurrence > MISFIRE_GRACE:
            _failed(
                engine,
                schedule.id,
                f"the run of {local_text(occurrence, schedule.tz)} was missed (no "
                "scheduler was running) and is skipped",
                result,
            )
            continue
        try:
            result.planned.append(_run(engine, settings, schedule, occurrence, now))
        except CampaignError as exc:
            _failed(
                engine, schedule.id, f"the run of {local_text(occurrence, schedule.tz)} was not sent: {exc}", result
            )


def _run(engine: Engine, settings: Settings, schedule: Any, occurrence: datetime, now: datetime) -> int:
    stored = PlanOptions.from_json(schedule.definition)
    stamp = f" {local_text(occurrence, schedule.tz)}"
    base = (stored.name or stored.contacts.stem)[: models.NAME_CHARS - len(stamp)]
    options = replace(stored, name=base + stamp)
    # Each run replaces the rejects file of the run before (never through a link, never the contact file).
    campaign_id = save_plan(engine, plan_from_options(options, settings, engine, force=True))
    with engine.begin() as connection:
        connection.execute(
            update(C)
            .where(C.c.id == campaign_id, C.c.state == State.DRAFT.value)
            .values(state=State.RUNNING.value, started_at=now, schedule_id=schedule.id)
        )
    log.info("schedule %s%s planned and started campaign %s", RECURRING, schedule.id, campaign_id)
    return campaign_id


def _failed(engine: Engine, schedule_id: int, reason: str, result: Scan) -> None:
    log.warning("schedule %s%s: %s", RECURRING, schedule_id, reason)
    with engine.begin() as connection:
        connection.execute(update(S).where(S.c.id == schedule_id).values(last_error=reason))
    result.refused.append((schedule_id, reason))


def scan(engine: Engine, settings: Settings, now: datetime | None = None) -> Scan:
    """Start what has come due: scheduled campaigns, campaigns whose window opened, recurring occurrences."""
    moment = now or clock.now()
    result = Scan(started=start_due(engine, moment), woken=wake_due(engine, moment))
    run_recurring(engine, settings, moment, result)
    return result


def overview(engine: Engine) -> list[dict[str, Any]]:
    """Campaigns waiting for their start, then every recurring schedule, with their next run."""
    with engine.connect() as connection:
        pending = connection.execute(
            select(C.c.id, C.c.name, C.c.scheduled_at, C.c.scheduled_tz)
            .where(C.c.state == State.SCHEDULED.value)
            .order_by(C.c.scheduled_at)
        ).all()
        recurring = connection.execute(select(S).order_by(S.c.id)).all()
        last = dict(
            connection.execute(
                select(C.c.schedule_id, func.max(C.c.id)).where(C.c.schedule_id.is_not(None)).group_by(C.c.schedule_id)
            ).all()
        )
    rows: list[dict[str, Any]] = [
        {
            "id": str(c.id),
            "what": f"campaign {c.id}: {c.name}",
            "next_run_at": as_utc(c.scheduled_at).isoformat(),
            "next_run": local_text(c.scheduled_at, c.scheduled_tz or "UTC"),
            "tz": c.scheduled_tz or "UTC",
            "recurrence": "once",
            "state": State.SCHEDULED.value,
            "last_campaign": None,
            "last_error": None,
        }
        for c in pending
    ]
    for s in recurring:
        options = PlanOptions.from_json(s.definition)
        active = s.state == ScheduleState.ACTIVE.value
        rows.append(
            {
                "id": f"{RECURRING}{s.id}",
                "what": f"{options.contacts.name}: {s.name or _shorten(options.message or '')}",
                "next_run_at": as_utc(s.next_run_at).isoformat() if active else None,
                "next_run": local_text(s.next_run_at, s.tz) if active else "-",
                "tz": s.tz,
                "recurrence": s.cron,
                "state": s.state,
                "last_campaign": last.get(s.id),
                "last_error": s.last_error,
            }
        )
    return rows


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cancel_schedule(engine: Engine, ident: str) -> str:
    """Cancel a recurring schedule (`r3`: the campaigns it already started go on) or a scheduled campaign (`12`)."""
    key = ident.strip().lower()
    if key.startswith(RECURRING) and key[1:].isdigit():
        with engine.begin() as connection:
            cancelled = connection.execute(
                update(S)
                .where(S.c.id == int(key[1:]), S.c.state == ScheduleState.ACTIVE.value)
                .values(state=ScheduleState.CANCELLED.value, updated_at=clock.now())
            ).rowcount
        if not cancelled:
            raise ScheduleError(f"no active recurring schedule {key} (see `campaign schedule list`)")
        return f"schedule {key} cancelled: it plans no more campaigns (those it started go on)"
    if not key.isdigit():
        raise ScheduleError(f"{ident!r} is not a schedule id: campaigns are numbers (12), recurring schedules r3")
    campaign_id = int(key)
    with engine.connect() as connection:
        state = connection.execute(select(C.c.state).where(C.c.id == campaign_id)).scalar_one_or_none()
    if state != State.SCHEDULED.value:
        now = f"it is {state}" if state else "there is no such campaign"
        raise ScheduleError(f"campaign {campaign_id} is not scheduled ({now}); `campaign cancel` stops a campaign")
    dropped = cancel(engine, campaign_id)
    return f"campaign {campaign_id} cancelled before its start; {dropped:,} messages will not be sent"
