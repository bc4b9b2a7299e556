"""`campaign send --at/--every` and `campaign schedule list|cancel|run`.

A campaign sent `--at` a time is planned, confirmed and stored now, in state
`scheduled`; one sent `--every` cron expression is stored as its options and
planned afresh at each run. With workers (`CAMPAIGN_BROKER_URL`), Celery beat
starts them when due. In local mode nothing runs in the background, so
`campaign schedule run` does the same once, in this process (cron can call it
every minute).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import Engine

from engine import clock
from engine.campaigns.schedules import (
    RECURRING,
    cancel_schedule,
    next_occurrence,
    overview,
    parse_at,
    save_recurring,
    scan,
    schedule_campaign,
)
from engine.cli.console import console, err_console, styled, warn
from engine.cli.plan import _print_json
from engine.cli.run import Outcome, finish, run_campaign
from engine.errors import CampaignError
from engine.planning.options import PlanOptions
from engine.planning.planner import Plan, save_plan
from engine.planning.summary import ScheduledStart
from engine.settings import Settings, get_settings
from engine.store.db import database
from engine.store.states import CampaignState
from engine.windows import describe_timing, local_text, zone

LOCAL_NOTE = (
    "local mode (no CAMPAIGN_BROKER_URL): nothing starts it by itself. Run `campaign schedule run` at "
    "or after that time (cron can run it every minute), or run the workers and beat"
)


@dataclass(frozen=True)
class Later:
    """When `campaign send` was asked to send: first at `first` (UTC), and again at each time of `cron` if given."""

    tz: str
    first: datetime
    cron: str | None = None

    @classmethod
    def ask(cls, at: str | None, every: str | None, tz: str | None, settings: Settings) -> Later | None:
        """The `--at`, `--every` and `--tz` options, checked before the contact file is read."""
        if at and every:
            raise CampaignError("give --at (once) or --every (again and again), not both")
        if not (at or every):
            if tz:
                raise CampaignError("--tz goes with --at or --every")
            return None
        name = zone(tz or settings.timezone).key
        now = clock.now()
        if at:
            return cls(name, parse_at(at, name, now))
        cron = " ".join((every or "").split())
        return cls(name, next_occurrence(cron, name, now), cron)

    def describe(self, plan: Plan) -> None:
        """Show the start in the plan: its summary's times count from the first run, not from now."""
        summary = plan.summary
        summary.timing = describe_timing(plan.window, summary.timing.why, self.first, len(summary.days))
        summary.schedule = ScheduledStart(self.first, self.tz, self.cron)

    def save(self, engine: Engine, settings: Settings, plan: Plan, options: PlanOptions, json_output: bool) -> None:
        """Store the planned campaign as `scheduled`, or the options as a recurring schedule, and say when it goes."""
        if self.cron is None:
            campaign_id = save_plan(engine, plan)
            schedule_campaign(engine, campaign_id, self.first, self.tz)
            starts = plan.summary.timing.starts_at
            if json_output:
                _print_json(
                    {
                        "campaign_id": campaign_id,
                        "state": CampaignState.SCHEDULED.value,
                        "scheduled_at": self.first.isoformat(),
                        "tz": self.tz,
                        "starts_at": starts.isoformat(),
                    }
                )
            else:
                window = f" (its window opens at {local_text(starts, self.tz)})" if starts > self.first else ""
                console.print(
                    f"campaign {campaign_id} scheduled for {local_text(self.first, self.tz)}{window}", highlight=False
                )
        else:
            schedule_id, first = save_recurring(engine, options, self.cron, self.tz, clock.now())
            following = [first]
            for _ in range(2):
                following.append(next_occurrence(self.cron, self.tz, following[-1]))
            if json_output:
                _print_json(
                    {
                        "schedule_id": f"{RECURRING}{schedule_id}",
                        "cron": self.cron,
                        "tz": self.tz,
                        "next_run_at": first.isoformat(),
                        "then": [t.isoformat() for t in following[1:]],
                    }
                )
            else:
                then = ", ".join(local_text(t, self.tz) for t in following[1:])
                console.print(
                    f"schedule {RECURRING}{schedule_id} saved: '{self.cron}' in {self.tz}; next run "
                    f"{local_text(first, self.tz)} (then {then}); each run reads the contact file again",
                    highlight=False,
                )
        if settings.local_mode:
            warn(LOCAL_NOTE, label="note:")


schedule_app = typer.Typer(help="Campaigns that start later, once or again and again.", no_args_is_help=True)


@schedule_app.command("list")
def list_command(json_output: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False) -> None:
    """Scheduled campaigns (by campaign id) and recurring schedules (r1, r2...), with their next run."""
    with database(get_settings().database_url) as engine:
        rows = overview(engine)
    if json_output:
        _print_json(rows)
        return
    table = Table("id", "campaign / definition", "next run", "tz", "recurrence", "state", "last run")
    for row in rows:
        last = f"campaign {row['last_campaign']}" if row["last_campaign"] else ""
        if row["last_error"]:
            last = f"{last}; {row['last_error']}".lstrip("; ")
        table.add_row(row["id"], row["what"], row["next_run"], row["tz"], row["recurrence"], row["state"], last)
    console.print(table)


@schedule_app.command("cancel")
def cancel_command(
    schedule_id: Annotated[str, typer.Argument(help="A scheduled campaign's id (12) or a recurring schedule's (r3).")],
) -> None:
    """Cancel a scheduled campaign before it starts, or stop a recurring schedule."""
    with database(get_settings().database_url) as engine:
        console.print(cancel_schedule(engine, schedule_id), highlight=False)


@schedule_app.command("run")
def run_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object per campaign sent.")] = False,
) -> None:
    """Start what has come due now (scheduled campaigns, windows that opened, recurring runs) and send it:
    in this process in local mode, through the workers otherwise."""

    settings = get_settings()
    with database(settings.database_url) as engine:
        result = scan(engine, settings)
        for schedule_id, reason in result.refused:
            err_console.print(styled("bold red", f"schedule {RECURRING}{schedule_id}:", reason), highlight=False)
        if not result.campaigns and not json_output:
            console.print("nothing is due", highlight=False)
        outcomes = [
            run_campaign(engine, settings, campaign_id, json_output, wait=False) for campaign_id in result.campaigns
        ]
    finish(max([*outcomes, *([Outcome.ERROR] if result.refused else [])], default=Outcome.SENT))


def register(app: typer.Typer) -> None:
    app.add_typer(schedule_app, name="schedule")
