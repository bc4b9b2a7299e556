"""Sending a stored campaign: in this process (local mode) with a progress bar, or queued to the workers.

`campaign send`, `resume`, the retries and `campaign schedule run` all end
here once the campaign is stored and ready, so each sends the same way and
prints the same status.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from datetime import datetime
from enum import IntEnum

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine

from engine.accounts import require_services, uses_sandbox
from engine.campaigns.lifecycle import Status, start, state_of, status, wait_for_senders
from engine.cli.console import console, err_console
from engine.cli.plan import _print_json
from engine.errors import ConfigurationError
from engine.local import local_sender, send_campaign, wait_for_reports
from engine.providers import client_class
from engine.settings import Settings
from engine.store.states import NOT_SENT, SEND_OUTCOMES, CampaignState, MessageStatus
from engine.windows import local_text

#: What the provider refused or failed when it was sent: nothing of it went out.
REFUSED_AT_SEND = (MessageStatus.FAILED.value, MessageStatus.REJECTED.value)


class Outcome(IntEnum):
    """What the exit status of a command that sends says (README, "Exit codes"): so that cron and scripts notice
    a campaign that did not go out. 2 is a command typed wrong (the command line parser's)."""

    SENT = 0
    #: An error the engine names in one line (a bad file or setting, a refused plan, a recurring run that failed).
    ERROR = 1
    FAILED = 3
    NOTHING_TAKEN = 4
    STOPPED = 5

    @classmethod
    def of(cls, final: Status) -> Outcome:
        """Failed; stopped before its end (paused, cancelled); finished with no message taken by the provider (each
        call refused or failed); or sent (also queued to the workers, or waiting for its window)."""
        if final.state == CampaignState.FAILED:
            return cls.FAILED
        if final.state in (CampaignState.PAUSED, CampaignState.CANCELLED):
            return cls.STOPPED
        refused = sum(final.counts.get(s, 0) for s in (*NOT_SENT, *REFUSED_AT_SEND))
        if final.state == CampaignState.COMPLETED and final.messages and refused == final.messages:
            return cls.NOTHING_TAKEN
        return cls.SENT


def finish(outcome: Outcome) -> None:
    """End the command with the outcome's exit status."""
    if outcome is not Outcome.SENT:
        raise typer.Exit(int(outcome))


def run_campaign(engine: Engine, settings: Settings, campaign_id: int, json_output: bool, wait: bool) -> Outcome:
    """Send the campaign, print where it stands, and say what the exit status should be."""
    if settings.local_mode:
        _send_locally(engine, settings, campaign_id, json_output, wait)
    else:
        # Running in the database first: if the broker loses the task, the sweep still finds the work.
        start(engine, campaign_id)
        _enqueue(settings, campaign_id)
        if wait:
            wait_for_senders(engine, campaign_id)
    final = status(engine, campaign_id)
    if json_output:
        counts = final.counts
        _print_json(
            {
                "campaign_id": campaign_id,
                "state": final.state,
                "reason": final.reason,
                **{key: counts.get(key, 0) for key in SEND_OUTCOMES},
                "counts": counts,
            }
        )
    else:
        print_status(final, settings.timezone)
    return Outcome.of(final)


def _send_locally(engine: Engine, settings: Settings, campaign_id: int, json_output: bool, wait: bool) -> None:
    """Send in this process; with the embedded sandbox (which ends with this command) or `--wait`, stay for
    the delivery reports too."""
    start(engine, campaign_id)
    total = status(engine, campaign_id).messages
    provider_name = status(engine, campaign_id).provider
    # A provider that pushes its reports pushes them to the webhook receiver: only the embedded sandbox pushes
    # into this process. One that is polled can be asked from here.
    stay = uses_sandbox(provider_name, settings) or (wait and client_class(provider_name).polls_reports)

    async def run(report: Callable[[int], None]) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        try:
            async with local_sender(engine, settings, provider_name, receive=stay) as sender:
                await send_campaign(engine, sender, campaign_id, settings.send_concurrency, report, stop)
                if stay and not stop.is_set():
                    if not json_output:
                        err_console.print("waiting for delivery reports (Ctrl-C stops waiting)...")
                    await wait_for_reports(engine, sender, provider_name, campaign_id, settings, stop)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        if state_of(engine, campaign_id) == CampaignState.PAUSED and stop.is_set():
            err_console.print(
                f"interrupted: campaign {campaign_id} is paused; `campaign resume {campaign_id}` sends the rest"
            )

    if json_output:
        asyncio.run(run(lambda done: None))
        return
    with Progress(
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("sending", total=total)
        asyncio.run(run(lambda done: bar.update(task, completed=done)))


def _enqueue(settings: Settings, campaign_id: int) -> None:
    require_services(settings)
    from kombu.exceptions import OperationalError

    from workers.app import app

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
        app.send_task("campaign.start_campaign", args=(campaign_id,), retry=False, ignore_result=True)
    except OperationalError as exc:
        raise ConfigurationError(
            f"cannot reach the broker at CAMPAIGN_BROKER_URL ({exc.__class__.__name__}); campaign {campaign_id} "
            "is saved and running: the workers' recovery sweep sends it once the broker, a worker and beat are up"
        ) from None
    err_console.print(f"campaign {campaign_id} queued for the workers")


def print_status(current: Status, tz: str) -> None:
    """The campaign's messages per status, its state, and its times in `tz` (the display zone)."""
    table = Table(title=f"campaign {current.campaign_id}: {current.name}", show_header=True)
    table.add_column("status")
    table.add_column("messages", justify="right")
    for name, count in sorted(current.counts.items(), key=lambda item: -item[1]):
        table.add_row(name, f"{count:,}")
    table.add_row(Text("total", style="bold"), Text(f"{current.messages:,}", style="bold"))
    console.print(table)
    reason = f" ({current.reason})" if current.reason else ""
    console.print(f"{current.channel} via {current.provider}: {current.state}{reason}", highlight=False)
    if current.delivery_rate is not None:
        extra = f", {current.fallbacks:,} handed to an SMS fallback" if current.fallbacks else ""
        console.print(f"delivered: {current.delivery_rate:.1%} of those sent{extra}", highlight=False)
    for line in _decisions(current, tz):
        console.print(line, highlight=False)
    cost = f"{current.estimated_cost:,.2f} {current.currency or ''}".strip()
    reported = (
        "not reported by the provider"
        if current.reported_cost is None
        else f"{current.reported_cost:,.2f} as reported by the provider"
    )
    console.print(
        f"estimated cost {cost} ({reported}); planned {when_text(current.planned_at, tz)}, first sent "
        f"{when_text(current.first_submit, tz)}, last sent {when_text(current.last_submit, tz)}, "
        f"last report {when_text(current.last_report, tz)}",
        highlight=False,
    )


def _decisions(current: Status, tz: str) -> list[str]:
    """What the user's decisions did, and how far the reports can be trusted, where there is anything to say."""
    lines = []
    if current.suppressed_at_send:
        lines.append(f"{current.suppressed_at_send:,} not sent: opted out after the campaign was planned")
    if current.stop_requested_at is not None:
        lines.append(
            f"stop asked at {when_text(current.stop_requested_at, tz)}; {current.sent_after_stop:,} sent after it "
            "(calls already with the provider finish)"
        )
    if current.matched_by_number:
        lines.append(
            f"{current.matched_by_number:,} delivery reports matched by the number alone (the provider named no "
            "message): another campaign to the same numbers awaiting reports could have been meant"
        )
    return lines


def when_text(moment: datetime | str | None, tz: str) -> str:
    """A stored time (a datetime, or ISO text as SQLite gives it) on the wall clock of `tz`, with the zone's
    name: `2026-11-25 09:00 IST`; `-` for none."""
    if not moment:
        return "-"
    return local_text(datetime.fromisoformat(moment) if isinstance(moment, str) else moment, tz)
