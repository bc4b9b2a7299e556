"""`campaign plan` and the commands that manage what planning reads: `db`, `dlt`, `suppress`.

Every engine error becomes one red line and exit status 1 (see `engine.cli.app`);
`--json` output is one object on stdout so scripts can read it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine

from engine import clock
from engine.cli.console import console, err_console, styled, warn
from engine.errors import CampaignError
from engine.planning.dlt import VAR_MAX, default_registry, import_templates, read_registry, stored_templates
from engine.planning.options import PlanOptions, plan_from_options
from engine.planning.planner import PREVIEWS, Plan
from engine.planning.summary import PlanSummary, Preview
from engine.planning.suppressions import add as add_suppressions
from engine.planning.suppressions import import_file, list_suppressions
from engine.planning.suppressions import remove as remove_suppressions
from engine.providers import PROVIDERS
from engine.redact import mask_url_password
from engine.settings import Settings, get_settings
from engine.store.db import current_revision, database, head_revision, make_engine, upgrade
from engine.windows import local_text, timing_text

#: Files at least this large get a progress bar.
PROGRESS_BYTES = 4 * 1024 * 1024


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")


def plan(
    contacts: Annotated[Path, typer.Argument(help="Contact CSV (UTF-8, UTF-16 or Windows-1252; , ; or tab).")],
    channel: Annotated[str, typer.Option(help="sms, email, rcs or whatsapp.")] = "sms",
    provider: Annotated[str, typer.Option(help=f"{' or '.join(PROVIDERS)}.")] = PROVIDERS[0],
    message: Annotated[
        str | None, typer.Option(help="Text with #column# placeholders (#column|default# for a default).")
    ] = None,
    sender: Annotated[str | None, typer.Option(help="Sender id / DLT header (SMS), or from address (email).")] = None,
    dlt_template_id: Annotated[str | None, typer.Option(help="Registered DLT template the SMS must match.")] = None,
    subject: Annotated[str | None, typer.Option(help="Email subject (placeholders allowed).")] = None,
    html: Annotated[Path | None, typer.Option(help="Email body from an HTML file (placeholders allowed).")] = None,
    agent_id: Annotated[str | None, typer.Option(help="RCS agent id.")] = None,
    fallback_message: Annotated[str | None, typer.Option(help="SMS sent when a device cannot take RCS.")] = None,
    to_column: Annotated[
        str | None, typer.Option(help="Column holding the addresses (found by name if not given).")
    ] = None,
    smart_encoding: Annotated[
        bool, typer.Option(help="Replace curly quotes, long dashes and odd spaces so SMS stay GSM-7.")
    ] = False,
    max_cost: Annotated[float | None, typer.Option(help="Refuse the plan if it would cost more than this.")] = None,
    spread: Annotated[
        bool, typer.Option("--spread/--no-spread", help="Spread over days when over the daily quota, or refuse.")
    ] = True,
    batch_size: Annotated[
        int | None, typer.Option(help="Recipients per provider call (at most the provider's limit).")
    ] = None,
    dlt_var_max: Annotated[int, typer.Option(help="Characters a DLT {#var#} may stand for.")] = VAR_MAX,
    rejects: Annotated[
        Path | None, typer.Option(help="Where to write rejected rows (default: beside the file).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the rejects file if it exists (never the contact file).")
    ] = False,
    name: Annotated[str | None, typer.Option(help="Campaign name (default: file name and time).")] = None,
    window: Annotated[
        str | None,
        typer.Option(
            help="Send only between these hours, e.g. 09:00-21:00 (default: any hour, but promotional "
            "SMS to India keep to CAMPAIGN_PROMOTIONAL_WINDOW, 09:00-21:00 IST)."
        ),
    ] = None,
    window_tz: Annotated[
        str | None, typer.Option(help="Time zone of --window (default: CAMPAIGN_TIMEZONE, Asia/Kolkata).")
    ] = None,
    check_balance: Annotated[
        bool, typer.Option("--check-balance/--skip-balance", help="Hold the estimate against the provider balance.")
    ] = True,
    strict: Annotated[
        bool, typer.Option("--strict", help="Refuse text that looks like a broken #placeholder# instead of warning.")
    ] = False,
    save: Annotated[bool, typer.Option(help="Store the campaign, its batches and messages in the database.")] = False,
    preview: Annotated[
        int, typer.Option(min=0, help="Show this many recipients' messages, every part (subject, fallback SMS).")
    ] = PREVIEWS,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the summary.")] = False,
) -> None:
    """Check, cost and batch a campaign before any money is spent; --save stores it for sending."""
    options = PlanOptions.from_command(locals())
    settings = get_settings()
    with database(settings.database_url) as engine:
        result = plan_campaign(settings, engine, options, save=save, show_progress=not json_output, force=force)
    result.summary.previews = result.previews(preview)
    if json_output:
        _print_json(result.summary.as_json())
    else:
        print_summary(result.summary)


def plan_campaign(
    settings: Settings,
    engine: Engine,
    options: PlanOptions,
    save: bool = False,
    show_progress: bool = True,
    force: bool = False,
) -> Plan:
    """Build (and with `save`, store) the plan the options describe, with a progress bar for large files;
    `force` replaces an existing rejects file."""
    contacts = options.contacts
    show_progress = show_progress and contacts.is_file() and contacts.stat().st_size >= PROGRESS_BYTES
    with _progress(show_progress) as report:
        return plan_from_options(options, settings, engine, save=save, progress=report, force=force)


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield lambda stage, fraction: None
        return
    with Progress(
        TextColumn("{task.description:<24}", markup=False),
        BarColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("reading", total=1.0)
        yield lambda stage, fraction: bar.update(task, description=stage, completed=fraction)


def print_preview(preview: Preview) -> None:
    """One recipient's message, and each other part that goes with it, as it will be sent."""
    parts = f" ({preview.segments} SMS part{'s' if preview.segments != 1 else ''}, {preview.encoding})"
    label = f"line {preview.line} to {preview.to}{parts if preview.segments else ''}:"
    console.print(styled("dim", label, preview.text, one_line=False), highlight=False)
    if preview.subject is not None:
        console.print(styled("dim", "  subject:", preview.subject), highlight=False)
    if preview.fallback is not None:
        console.print(styled("dim", "  fallback SMS:", preview.fallback, one_line=False), highlight=False)


def print_summary(summary: PlanSummary) -> None:
    """The plan as a table on stdout, then its previews; its warnings on stderr."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    _add_counts(table, summary)
    _add_encodings(table, summary)
    _add_batches(table, summary)
    _add_money_and_timing(table, summary)
    console.print(table)
    for preview in summary.previews:
        print_preview(preview)
    for warning in summary.warnings:
        warn(warning)


def _add_counts(table: Table, summary: PlanSummary) -> None:
    """The file, the channel, and what became of its rows."""
    table.add_row("file", f"{summary.file} ({summary.encoding}, column {summary.address_column!r})")
    table.add_row("channel", f"{summary.channel} via {summary.provider}")
    table.add_row("rows read", f"{summary.rows:,}")
    table.add_row("valid", f"{summary.valid:,}")
    table.add_row("rejected", f"{summary.rejected:,}")
    for reason, count in summary.rejected_by_reason.items():
        table.add_row("", f"{count:,}  {reason}")
    table.add_row("duplicates", f"{summary.duplicates:,}")
    table.add_row("suppressed", f"{summary.suppressed:,}")
    table.add_row("messages", f"{summary.messages:,}")


def _add_encodings(table: Table, summary: PlanSummary) -> None:
    """Segments, the encodings and why UCS-2, and the SMS fallback's cost at most."""
    table.add_row("segments", f"{summary.segments:,}")
    for encoding, messages, because in summary.encodings.shares():
        why = f" (because of {', '.join(repr(c) for c in because)})" if because else ""
        table.add_row("", f"{messages:,} {encoding.upper()}{why}")
    if summary.smart_encoding_replacements:
        table.add_row("", f"{summary.smart_encoding_replacements:,} made GSM-7 by smart encoding")
    fallback = summary.fallback
    if fallback is not None:
        kinds = ", ".join(f"{messages:,} {encoding.upper()}" for encoding, messages, _ in fallback.encodings.shares())
        table.add_row(
            "SMS fallback",
            f"{fallback.segments:,} segments ({kinds}), at most {fallback.max_cost:,.2f} {summary.currency}",
        )


def _add_batches(table: Table, summary: PlanSummary) -> None:
    """The batches, and the days a daily quota spreads them over (the first week of them)."""
    table.add_row("batches", f"{summary.batches:,} (largest {summary.largest_batch:,})")
    if len(summary.days) <= 1:
        return
    timing = summary.timing
    zone = timing.window.tz if timing.window else "UTC"
    for day, starts in list(zip(summary.days, timing.day_starts, strict=True))[:7]:
        table.add_row(
            "",
            f"day {day.day}: {day.messages:,} messages in {day.batches:,} batches, from {local_text(starts, zone)}",
        )
    if len(summary.days) > 7:
        table.add_row("", f"... {len(summary.days)} days in all")


def _add_money_and_timing(table: Table, summary: PlanSummary) -> None:
    """The cost and its prices, the balance read, when it sends, the rejects file and the saved campaign."""
    table.add_row("estimated cost", f"{summary.estimated_cost:,.2f} {summary.currency} ({', '.join(summary.prices)})")
    if summary.balance is not None:
        table.add_row("balance", f"{summary.balance.amount:,.2f} {summary.balance.currency}")
    schedule_tz = summary.schedule.tz if summary.schedule else None
    sends = timing_text(summary.timing, clock.now(), schedule_tz)
    if sends:
        table.add_row("sends", sends)
    if summary.rejects_file:
        table.add_row("rejects", summary.rejects_file)
    if summary.campaign_id is not None:
        table.add_row("saved", f"campaign {summary.campaign_id}")


db_app = typer.Typer(help="The campaign database.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database at CAMPAIGN_DATABASE_URL to the current schema."""
    engine = make_engine(get_settings().database_url)
    try:
        upgrade(engine)
        console.print(f"database at schema {current_revision(engine)}")
    except CampaignError:
        raise
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CampaignError(f"cannot upgrade the database: {reason}") from None
    finally:
        engine.dispose()


@db_app.command("current")
def db_current() -> None:
    """Show where the database is, its schema revision and the newest one."""
    url = get_settings().database_url
    engine = make_engine(url)
    try:
        console.print(f"database {mask_url_password(url)}", highlight=False)
        console.print(f"database at schema {current_revision(engine) or 'none'}; newest is {head_revision()}")
    finally:
        engine.dispose()


dlt_app = typer.Typer(help="The registry of India DLT templates.", no_args_is_help=True)


@dlt_app.command("import")
def dlt_import(
    file: Annotated[Path, typer.Argument(help="CSV: template_id, entity_id, header, category, text.")],
) -> None:
    """Add (or replace, by id) DLT templates from a CSV."""
    templates = read_registry(file)
    with database(get_settings().database_url) as engine:
        count = import_templates(engine, templates)
    console.print(f"imported {count} DLT templates")


@dlt_app.command("list")
def dlt_list(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show the DLT templates a plan can use: imported ones, then those shipped in config/."""
    with database(get_settings().database_url) as engine:
        imported = stored_templates(engine)
    known = {t.template_id for t in imported}
    listed = [(t, "imported") for t in imported]
    listed += [(t, "shipped") for t in default_registry() if t.template_id not in known]
    if json_output:
        _print_json([{**_template_dict(t), "source": source} for t, source in listed])
        return
    table = Table("template id", "entity id", "header", "category", "text", "source")
    for t, source in listed:
        table.add_row(t.template_id, t.entity_id, t.header, t.category or "", t.text, source)
    console.print(table)


def _template_dict(template: Any) -> dict[str, Any]:
    return {f: getattr(template, f) for f in ("template_id", "entity_id", "header", "category", "text")}


suppress_app = typer.Typer(help="Addresses that must never be messaged.", no_args_is_help=True)


@suppress_app.command("add")
def suppress_add(
    addresses: Annotated[list[str], typer.Argument(help="Phone numbers or email addresses.")],
    reason: Annotated[str, typer.Option(help="Why: opt-out, hard bounce, complaint...")] = "opt-out",
) -> None:
    """Suppress addresses typed on the command line."""
    settings = get_settings()
    with database(settings.database_url) as engine:
        added, refused = add_suppressions(
            engine, addresses, reason=reason, source="cli", region=settings.default_region
        )
    if refused:
        value, why = refused[0]
        raise CampaignError(f"{value!r}: {why}" + (f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""))
    console.print(f"suppressed {added} new addresses")


@suppress_app.command("remove")
def suppress_remove(
    addresses: Annotated[list[str], typer.Argument(help="Phone numbers or email addresses.")],
    reason: Annotated[str, typer.Option(help="Why they may be messaged again (kept with the removal).")],
) -> None:
    """Take addresses off the suppression list, when people opt back in; the removal is kept with its reason."""
    settings = get_settings()
    with database(settings.database_url) as engine:
        result = remove_suppressions(engine, addresses, reason=reason, region=settings.default_region)
    for value, why in result.refused:
        warn(f"{value!r}: {why}")
    for address in result.not_listed:
        warn(f"{address} was not suppressed")
    console.print(f"removed {len(result.removed)} addresses from the suppression list", highlight=False)


@suppress_app.command("import")
def suppress_import(
    file: Annotated[Path, typer.Argument(help="CSV with a phone or email column.")],
    reason: Annotated[str, typer.Option(help="Why these addresses are suppressed.")] = "opt-out",
    to_column: Annotated[str | None, typer.Option(help="Column holding the addresses.")] = None,
) -> None:
    """Suppress every address in a CSV (unusable rows are reported, not imported)."""
    settings = get_settings()
    with database(settings.database_url) as engine:
        rows, added, refused = import_file(
            engine,
            file,
            reason=reason,
            region=settings.default_region,
            to_column=to_column,
            max_bytes=settings.max_file_bytes,
        )
    console.print(f"read {rows:,} rows: {added:,} newly suppressed, {len(refused):,} unusable")
    for line, value, why in refused[:20]:
        err_console.print(f"  line {line}: {value!r}: {why}", highlight=False)


@suppress_app.command("list")
def suppress_list(
    limit: Annotated[int | None, typer.Option(help="Show at most this many.")] = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the suppression list, oldest first."""
    settings = get_settings()
    tz = settings.timezone
    with database(settings.database_url) as engine:
        rows = list_suppressions(engine, limit)
    if json_output:
        _print_json(
            [
                {"address": r.address, "reason": r.reason, "source": r.source, "created_at": r.created_at.isoformat()}
                for r in rows
            ]
        )
        return
    table = Table("address", "reason", "source", "since")
    for r in rows:
        table.add_row(r.address, r.reason, r.source or "", local_text(r.created_at, tz))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Attach these commands to the `campaign` app."""
    app.command("plan")(plan)
    app.add_typer(db_app, name="db")
    app.add_typer(dlt_app, name="dlt")
    app.add_typer(suppress_app, name="suppress")
