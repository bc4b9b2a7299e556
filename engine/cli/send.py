"""`campaign send`, and steering a campaign once it exists: `status`, `pause`, `resume`, `cancel`.

`send` takes every option of `campaign plan`, shows the plan, asks before any
money is spent (unless `--yes`), stores the campaign and sends it: in this
process in local mode (no `CAMPAIGN_BROKER_URL`), with a progress bar, or
through the Celery workers otherwise. Ctrl-C in local mode lets the batches in
flight finish, sends nothing more, and pauses the campaign so that `campaign
resume ID` continues exactly where it stopped.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import Engine

from engine import clock
from engine.accounts import require_services
from engine.campaigns.export import export
from engine.campaigns.lifecycle import (
    Doubt,
    cancel,
    doubt,
    overview,
    pause,
    repeats_of,
    resend_ambiguous,
    retry_failed,
    start,
    status,
)
from engine.cli.console import console, err_console, warn
from engine.cli.plan import _print_json, plan, plan_campaign, print_summary
from engine.cli.run import finish, print_status, run_campaign, when_text
from engine.cli.schedule import Later
from engine.csvsafe import Target
from engine.errors import CampaignError
from engine.local import send_test
from engine.planning.options import PlanOptions
from engine.planning.planner import Plan, save_plan
from engine.redact import mask_address
from engine.settings import Settings, get_settings
from engine.store.db import database
from engine.store.states import TEMPORARY_FAILURES, CampaignState, MessageStatus

CampaignId = Annotated[int, typer.Argument(help="The campaign's id (see `campaign plan --save` or `campaign send`).")]


def with_plan_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the options of `campaign plan` before its own, so both read the same flags."""
    shared = [
        p
        for p in inspect.signature(plan, eval_str=True).parameters.values()
        if p.name in (*PlanOptions.names(), "force", "preview", "json_output")
    ]
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]

    @functools.wraps(command)
    def wrapper(**values: Any) -> None:
        command(**values)

    wrapper.__signature__ = inspect.Signature(shared + own)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in shared + own}
    return wrapper


@with_plan_options
def send(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Send without asking for confirmation.")] = False,
    test_to: Annotated[
        str | None, typer.Option(help="Send the first message to these numbers (comma-separated) and stop.")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait until every batch is sent (with workers) or reported on (in local mode).")
    ] = False,
    at: Annotated[
        str | None, typer.Option(help="Start at this time instead of now, e.g. '2026-11-24 10:00' (in --tz).")
    ] = None,
    every: Annotated[
        str | None,
        typer.Option(
            help="Plan and send again at each time of this cron expression, e.g. '0 10 * * MON' "
            "(Mondays 10:00, in --tz); each run reads the contact file again."
        ),
    ] = None,
    tz: Annotated[
        str | None, typer.Option(help="Time zone of --at and --every (default: CAMPAIGN_TIMEZONE, Asia/Kolkata).")
    ] = None,
    **shared: Any,
) -> None:
    """Plan, confirm and send a campaign (the options of `campaign plan`, then these)."""
    json_output, force, preview = shared.pop("json_output"), shared.pop("force"), shared.pop("preview")
    options = PlanOptions.from_command(shared)
    settings = get_settings()
    with database(settings.database_url) as engine:
        later = Later.ask(at, every, tz, settings)
        result = plan_campaign(settings, engine, options, show_progress=not json_output, force=force)
        result.summary.previews = result.previews(preview)
        if later is not None:
            later.describe(result)
        if not json_output:
            print_summary(result.summary)
        if test_to:
            _send_test(engine, settings, result, [n.strip() for n in test_to.split(",") if n.strip()], json_output)
            return
        if not settings.local_mode:
            require_services(settings)
        _confirm(engine, result, yes)
        if later is not None:
            later.save(engine, settings, result, options, json_output)
            return
        campaign_id = save_plan(engine, result)
        finish(run_campaign(engine, settings, campaign_id, json_output, wait))


def _send_test(engine: Engine, settings: Settings, result: Plan, numbers: list[str], json_output: bool) -> None:
    outcome = asyncio.run(send_test(engine, settings, result, numbers))
    if json_output:
        _print_json(outcome)
        return
    for number, message_id in outcome["sent"].items():
        console.print(f"test message sent to {mask_address(number)} ({message_id or 'no id given'})", highlight=False)


def _confirm(engine: Engine, result: Plan, yes: bool) -> None:
    """Ask before spending, and twice over when the same file and text went out in the last day."""
    request = result.request
    repeats = repeats_of(engine, request.contacts, request.message, since=clock.now() - timedelta(days=1))
    if repeats:
        warn(f"this file and text already went out {repeats} time(s) in the last day")
    summary = result.summary
    _ask_to_spend(summary.messages, f"{summary.estimated_cost:,.2f} {summary.currency}", yes)


def _ask_to_spend(messages: int, cost: str, yes: bool) -> None:
    """Nothing is spent without a yes: `--yes`, or an answer at the terminal."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CampaignError("nothing was sent: add --yes to send without a question")
    if not typer.confirm(f"Send {messages:,} messages for about {cost}?", default=False, err=True):
        raise CampaignError("nothing was sent")


def status_command(
    campaign_id: CampaignId,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Where a campaign stands: its state and its messages per status."""
    with database(get_settings().database_url) as engine:
        current = status(engine, campaign_id)
    if json_output:
        _print_json(current.as_dict())
    else:
        print_status(current, get_settings().timezone)


def pause_command(campaign_id: CampaignId) -> None:
    """Stop sending after the batches in flight; `campaign resume` continues."""
    with database(get_settings().database_url) as engine:
        pause(engine, campaign_id)
    console.print(f"campaign {campaign_id} paused")


def resume_command(
    campaign_id: CampaignId,
    wait: Annotated[bool, typer.Option(help="With workers: wait until every batch is sent.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object at the end.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Send a saved draft without asking.")] = False,
) -> None:
    """Send what is left of a paused (or stopped) campaign, from its recorded state; a saved draft, once
    confirmed."""
    settings = get_settings()
    with database(settings.database_url) as engine:
        current = status(engine, campaign_id)
        if current.state == CampaignState.DRAFT:  # never confirmed: it was only planned
            _ask_to_spend(current.messages, f"{current.estimated_cost:,.2f} {current.currency or ''}".strip(), yes)
        start(engine, campaign_id)
        finish(run_campaign(engine, settings, campaign_id, json_output, wait))


def resend_ambiguous_command(
    campaign_id: CampaignId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Re-send without asking.")] = False,
    now: Annotated[
        bool, typer.Option("--now", help="Also those in doubt too recently for their reports to have come.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="With workers: wait until every batch is sent.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object at the end.")] = False,
) -> None:
    """Send again the messages whose sending is uncertain and that no delivery report vouches for, once their
    reports have had CAMPAIGN_RESEND_AFTER_MINUTES to come (`--now`: also the more recent ones)."""
    settings = get_settings()
    with database(settings.database_url) as engine:
        if not status(engine, campaign_id).counts.get(MessageStatus.AMBIGUOUS.value, 0):
            raise CampaignError(f"campaign {campaign_id} has no ambiguous messages")
        cutoff = clock.now() - timedelta(minutes=settings.resend_after_minutes)
        question = _doubt_question(doubt(engine, campaign_id, cutoff), campaign_id, now, settings)
        resend = functools.partial(resend_ambiguous, doubted_before=None if now else cutoff)
        _send_again(engine, settings, campaign_id, question, resend, yes, json_output, wait)


def _doubt_question(found: Doubt, campaign_id: int, now: bool, settings: Settings) -> str:
    """What re-sending would do, asked before it is done; refused when reports may still clear every one."""
    recent = ""
    if found.recent_until is not None:
        until = when_text(found.recent_until + timedelta(minutes=settings.resend_after_minutes), settings.timezone)
        recent = f"{found.recent:,} fell in doubt too recently: their reports may clear them until {until}"
    if not now and found.recent == found.unreported:
        raise CampaignError(f"nothing was re-sent: {recent}; run this again then, or pass --now to send them anyway")
    count = found.unreported if now else found.unreported - found.recent
    question = f"{count:,} messages of campaign {campaign_id} may have been sent already"
    if recent:
        question += f" ({recent}; " + ("included: they may get it twice)" if now else "left out)")
    return question + "; send those without a delivery report again?"


def retry_failed_command(
    campaign_id: CampaignId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Re-send without asking.")] = False,
    wait: Annotated[bool, typer.Option(help="With workers: wait until every batch is sent.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object at the end.")] = False,
) -> None:
    """Send again the messages that failed for a temporary reason (network, outage, expired); never those the
    provider refused for good (invalid number, DND, DLT)."""
    settings = get_settings()
    with database(settings.database_url) as engine:
        counts = status(engine, campaign_id).counts
        temporary = sum(counts.get(s, 0) for s in TEMPORARY_FAILURES)
        if not temporary:
            raise CampaignError(f"campaign {campaign_id} has no messages that failed for a temporary reason")
        question = f"send {temporary:,} failed or expired messages of campaign {campaign_id} again?"
        _send_again(engine, settings, campaign_id, question, retry_failed, yes, json_output, wait)


def _send_again(
    engine: Engine,
    settings: Settings,
    campaign_id: int,
    question: str,
    requeue: Callable[[Engine, int], int],
    yes: bool,
    json_output: bool,
    wait: bool,
) -> None:
    """Ask (unless `--yes`), give the chosen messages back to sending, and send them."""
    if not yes and not (sys.stdin.isatty() and typer.confirm(question, err=True)):
        raise CampaignError("nothing was re-sent: add --yes to re-send without a question")
    count = requeue(engine, campaign_id)
    err_console.print(f"re-sending {count:,} messages of campaign {campaign_id}")
    finish(run_campaign(engine, settings, campaign_id, json_output, wait))


def report_command(
    campaign_id: CampaignId,
    out: Annotated[
        Path | None, typer.Option(help="Where to write the CSV (default: campaign-ID.csv, or a fresh name if taken).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the file if it exists.")] = False,
) -> None:
    """One row per recipient: line in the file, address, channel used, status, provider id, error, times."""
    target = Target.asked(out, Path(f"campaign-{campaign_id}.csv"), force)
    settings = get_settings()
    with database(settings.database_url) as engine:
        count, path = export(engine, campaign_id, target, settings.timezone)
    console.print(f"wrote {count:,} rows to {path}", highlight=False)


def list_command(json_output: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False) -> None:
    """The campaigns, with their state and how far sending has got."""
    settings = get_settings()
    tz = settings.timezone
    with database(settings.database_url) as engine:
        campaigns = overview(engine)
    if json_output:
        _print_json(campaigns)
        return
    table = Table("id", "name", "channel", "provider", "state", "sent", "created")
    for c in campaigns:
        share = f"{c['sent'] / c['messages']:.0%}" if c["messages"] else "-"
        table.add_row(
            str(c["campaign_id"]),
            c["name"],
            c["channel"],
            c["provider"],
            c["state"],
            f"{c['sent']:,} / {c['messages']:,} ({share})",
            when_text(c["created_at"], tz),
        )
    console.print(table)


def cancel_command(
    campaign_id: CampaignId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Cancel without asking.")] = False,
) -> None:
    """Never send what has not been sent yet."""
    with database(get_settings().database_url) as engine:
        if not yes and not (sys.stdin.isatty() and typer.confirm(f"Cancel campaign {campaign_id}?", err=True)):
            raise CampaignError("nothing was cancelled: add --yes to cancel without a question")
        dropped = cancel(engine, campaign_id)
    console.print(f"campaign {campaign_id} cancelled; {dropped:,} messages will not be sent")


def register(app: typer.Typer) -> None:
    app.command("send")(send)
    app.command("status")(status_command)
    app.command("pause")(pause_command)
    app.command("resume")(resume_command)
    app.command("cancel")(cancel_command)
    app.command("resend-ambiguous")(resend_ambiguous_command)
    app.command("retry-failed")(retry_failed_command)
    app.command("report")(report_command)
    app.command("list")(list_command)
