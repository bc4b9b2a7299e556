"""From the options of `campaign plan` to a checked plan: what the commands and the scheduler share.

`campaign plan` and `campaign send` read the options from the command line;
a recurring schedule keeps the same options and plans from them again at each
occurrence. Both go through `plan_from_options`, so a scheduled run is checked
exactly as one typed by hand (DLT, suppressions, the balance, the cost cap).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from engine import clock
from engine.errors import CampaignError
from engine.planning.contacts import read_bounded
from engine.planning.dlt import VAR_MAX, find_template
from engine.planning.planner import (
    Plan,
    PlanContext,
    PlanRequest,
    build_plan,
    check_funds,
    default_name,
    save_plan,
)
from engine.planning.pricing import PriceTable
from engine.planning.suppressions import suppressed_addresses
from engine.providers import CLIENTS, PROVIDERS
from engine.providers.base import Balance
from engine.settings import Settings
from engine.store import models
from engine.windows import SendWindow, local_text

#: The options that name files: stored by absolute path, read back as paths.
PATH_OPTIONS = ("contacts", "html", "rejects")
#: The options added since schedules were first stored: kept only when not at their default, so that a
#: schedule that does not use them is stored as before.
LATER_OPTIONS = ("strict",)


@dataclass(frozen=True)
class PlanOptions:
    """The options of `campaign plan` that describe a campaign, as one typed value.

    `campaign plan`, `campaign send` and `campaign demo` build it from their
    flags, a recurring schedule stores it (`to_json`) and reads it back at each
    run (`from_json`), and `plan_from_options` plans from it. The defaults are
    those of the `campaign plan` flags; the fields keep the order in which a
    schedule's JSON has always listed them, so stored schedules read back as
    they were written.
    """

    contacts: Path
    channel: str = "sms"
    provider: str = PROVIDERS[0]
    message: str | None = None
    sender: str | None = None
    dlt_template_id: str | None = None
    subject: str | None = None
    html: Path | None = None
    agent_id: str | None = None
    fallback_message: str | None = None
    to_column: str | None = None
    smart_encoding: bool = False
    max_cost: float | None = None
    spread: bool = True
    batch_size: int | None = None
    dlt_var_max: int = VAR_MAX
    rejects: Path | None = None
    name: str | None = None
    check_balance: bool = True
    window: str | None = None
    window_tz: str | None = None
    strict: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The options' names, which are also the names of the `campaign plan` parameters that give them."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_command(cls, values: Mapping[str, Any]) -> PlanOptions:
        """The options among a command's parameter values (its other parameters are left out)."""
        return cls(**{name: values[name] for name in cls.names()})

    def to_json(self) -> str:
        """The options as a recurring schedule stores them: every one by name (those of `LATER_OPTIONS` only when
        set), files by absolute path so the scanner finds them from any directory."""
        saved: dict[str, Any] = {name: getattr(self, name) for name in self.names()}
        defaults = PlanOptions(self.contacts)
        for name in LATER_OPTIONS:
            if saved[name] == getattr(defaults, name):
                del saved[name]
        for name in PATH_OPTIONS:
            path = saved[name]
            if path is not None:
                saved[name] = str(Path(path).expanduser().resolve())
        return orjson.dumps(saved).decode()

    @classmethod
    def from_json(cls, definition: str) -> PlanOptions:
        """The options a recurring schedule stored (`to_json`); a name this version does not know is left out."""
        stored: dict[str, Any] = orjson.loads(definition)
        for name in PATH_OPTIONS:
            if stored.get(name) is not None:
                stored[name] = Path(stored[name])
        return cls(**{name: stored[name] for name in cls.names() if name in stored})


def fetch_balance(provider: str, settings: Settings) -> Balance:
    """The provider's balance, read through its client (the embedded sandbox when so configured)."""
    from engine.accounts import open_provider

    async def read() -> Balance:
        async with open_provider(provider, settings) as client:
            return await client.balance()

    return asyncio.run(read())


def _noop(stage: str, fraction: float) -> None:
    return None


def send_window(options: PlanOptions, settings: Settings) -> SendWindow | None:
    """The `--window` asked for, in `--window-tz` (by default the configured time zone)."""
    if options.window:
        return SendWindow.parse(options.window, options.window_tz or settings.timezone)
    if options.window_tz:
        raise CampaignError("--window-tz needs a --window (for example --window 09:00-21:00)")
    return None


def plan_from_options(
    options: PlanOptions,
    settings: Settings,
    engine: Engine,
    save: bool = False,
    progress: Callable[[str, float], None] = _noop,
    force: bool = False,
) -> Plan:
    """Build (and with `save`, store) the plan the options describe, refusing what must not be sent; `force`
    replaces an existing rejects file (`--force`, not kept in a schedule's options: each command says it)."""
    request = _request(options, settings, engine, force)
    context = _context(request.provider, settings, engine)
    planning_share = 0.8 if save else 1.0
    result = build_plan(request, context, lambda stage, done: progress(stage, done * planning_share))
    if options.check_balance:
        progress("reading the balance", planning_share)
        _check_balance(result, settings)
    if save:
        progress("saving", planning_share)
        save_plan(engine, result)
    return result


def _body(options: PlanOptions, max_html_bytes: int) -> str:
    """The message: `--message`, or the `--html` file's text; one of them, not both."""
    message, html = options.message, options.html
    if html is not None and message:
        raise CampaignError("give the body with --message or with --html, not both")
    if html is not None:
        try:
            message = read_bounded(html, max_html_bytes, "CAMPAIGN_MAX_HTML_KB").decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CampaignError(f"cannot read the HTML body {html}: {getattr(exc, 'strerror', None) or exc}") from None
    if not message:
        raise CampaignError("give the message with --message (or --html for email)")
    return message


def _request(options: PlanOptions, settings: Settings, engine: Engine, force: bool) -> PlanRequest:
    """What the options ask the planner for: the body read, the DLT template looked up, the window parsed."""
    _check_lengths(options)
    message = _body(options, settings.max_html_bytes)
    template_id = options.dlt_template_id
    return PlanRequest(
        contacts=options.contacts,
        channel=options.channel.lower(),
        provider=options.provider.lower(),
        message=message,
        sender=options.sender,
        subject=options.subject,
        agent_id=options.agent_id,
        fallback_message=options.fallback_message,
        dlt_template=find_template(template_id, engine) if template_id else None,
        to_column=options.to_column,
        smart_encoding=options.smart_encoding,
        max_cost=options.max_cost,
        spread=options.spread,
        batch_size=options.batch_size,
        dlt_var_max=options.dlt_var_max,
        rejects=options.rejects,
        name=options.name or default_name(options.contacts, local_text(clock.now(), settings.timezone)),
        window=send_window(options, settings),
        force=force,
        strict=options.strict,
    )


def _check_lengths(options: PlanOptions) -> None:
    """What is typed into a column of the campaign fits it, refused before the file is read."""
    campaigns = models.CAMPAIGNS.c
    models.bounded(options.name, campaigns.name, "campaign name")
    models.bounded(options.sender, campaigns.sender, "sender")
    models.bounded(options.agent_id, campaigns.agent_id, "agent id")


def _context(provider: str, settings: Settings, engine: Engine) -> PlanContext:
    """What the plan is checked against: prices, rules, the suppression list and the account's daily quota."""
    client = CLIENTS.get(provider)  # an unknown one is refused by the planner, with the choices
    plan = client.rate_plan(settings) if client is not None else None
    quota = plan.daily_messages if plan is not None else None
    return PlanContext(
        prices=PriceTable.load(),
        region=settings.default_region,
        require_dlt=settings.require_dlt,
        suppressed=suppressed_addresses(engine),
        daily_quota=quota,
        plan_name=plan.name if quota and plan is not None else None,
        promotional_window=settings.promotional,
        max_file_bytes=settings.max_file_bytes,
        max_sms_parts=settings.max_sms_parts,
    )


def _check_balance(result: Plan, settings: Settings) -> None:
    """Hold the plan against the provider balance; a balance that cannot be read is a warning, not a refusal."""
    provider = result.request.provider
    try:
        balance = fetch_balance(provider, settings)
    except (CampaignError, OSError) as exc:
        result.summary.warnings.append(f"the {provider} balance could not be read ({exc}): not checked")
    else:
        check_funds(result, balance)
