"""From the options of `campaign plan` to a checked plan: what the commands and the scheduler share.

`campaign plan` and `campaign send` read the options from the command line;
a recurring schedule keeps the same options and plans from them again at each
occurrence. Both go through `plan_from_options`, so a scheduled run is checked
exactly as one typed by hand (DLT, suppressions, the balance, the cost cap).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from engine.errors import CampaignError
from engine.planning.dlt import find_template
from engine.planning.planner import Plan, PlanContext, PlanRequest, build_plan, check_funds, save_plan
from engine.planning.pricing import PriceTable
from engine.planning.suppressions import suppressed_addresses
from engine.providers import CLIENTS
from engine.providers.base import Balance
from engine.settings import Settings
from engine.windows import SendWindow

#: The options of `campaign plan` that describe the campaign (`campaign send` and schedules take them too).
PLAN_OPTIONS = (
    "contacts",
    "channel",
    "provider",
    "message",
    "sender",
    "dlt_template_id",
    "subject",
    "html",
    "agent_id",
    "fallback_message",
    "to_column",
    "smart_encoding",
    "max_cost",
    "spread",
    "batch_size",
    "dlt_var_max",
    "rejects",
    "name",
    "check_balance",
    "window",
    "window_tz",
)
#: The options that name files.
PATH_OPTIONS = ("contacts", "html", "rejects")


def fetch_balance(provider: str, settings: Settings) -> Balance:
    """The provider's balance, read through its client (the embedded sandbox when so configured)."""
    from engine.accounts import open_provider

    async def read() -> Balance:
        async with open_provider(provider, settings) as client:
            return await client.balance()

    return asyncio.run(read())


def _noop(stage: str, fraction: float) -> None:
    return None


def send_window(options: dict[str, Any], settings: Settings) -> SendWindow | None:
    """The `--window` asked for, in `--window-tz` (by default the configured time zone)."""
    if options.get("window"):
        return SendWindow.parse(options["window"], options.get("window_tz") or settings.timezone)
    if options.get("window_tz"):
        raise CampaignError("--window-tz needs a --window (for example --window 09:00-21:00)")
    return None


def plan_from_options(
    settings: Settings,
    engine: Engine,
    options: dict[str, Any],
    save: bool = False,
    progress: Callable[[str, float], None] = _noop,
) -> Plan:
    """Build (and with `save`, store) the plan the options describe, refusing what must not be sent."""
    contacts: Path = options["contacts"]
    message, html = options["message"], options["html"]
    if html is not None and message:
        raise CampaignError("give the body with --message or with --html, not both")
    if html is not None:
        try:
            message = html.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CampaignError(f"cannot read the HTML body {html}: {getattr(exc, 'strerror', None) or exc}") from None
    if not message:
        raise CampaignError("give the message with --message (or --html for email)")
    channel, provider = options["channel"].lower(), options["provider"].lower()
    template_id = options["dlt_template_id"]
    request = PlanRequest(
        contacts=contacts,
        channel=channel,
        provider=provider,
        message=message,
        sender=options["sender"],
        subject=options["subject"],
        agent_id=options["agent_id"],
        fallback_message=options["fallback_message"],
        dlt_template=find_template(template_id, engine) if template_id else None,
        to_column=options["to_column"],
        smart_encoding=options["smart_encoding"],
        max_cost=options["max_cost"],
        spread=options["spread"],
        batch_size=options["batch_size"],
        dlt_var_max=options["dlt_var_max"],
        rejects=options["rejects"],
        name=options["name"],
        window=send_window(options, settings),
    )
    client = CLIENTS.get(provider)  # an unknown one is refused by the planner, with the choices
    plan = client.rate_plan(settings) if client is not None else None
    quota = plan.daily_messages if plan is not None else None
    context = PlanContext(
        prices=PriceTable.load(),
        region=settings.default_region,
        require_dlt=settings.require_dlt,
        suppressed=suppressed_addresses(engine),
        daily_quota=quota,
        plan_name=plan.name if quota and plan is not None else None,
        promotional_window=settings.promotional,
    )
    planning_share = 0.8 if save else 1.0
    result = build_plan(request, context, lambda stage, done: progress(stage, done * planning_share))
    if options["check_balance"]:
        progress("reading the balance", planning_share)
        try:
            balance = fetch_balance(provider, settings)
        except (CampaignError, OSError) as exc:
            result.summary["warnings"].append(f"the {provider} balance could not be read ({exc}): not checked")
        else:
            check_funds(result, balance)
    if save:
        progress("saving", planning_share)
        save_plan(engine, result)
    return result
