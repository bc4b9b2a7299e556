"""The `campaign` command.

Every command turns the engine's own errors (`CampaignError`) into one red line
and exit status 1, so a marketer never sees a traceback for a bad file or a
wrong setting; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

from engine.errors import CampaignError

app = typer.Typer(
    name="campaign",
    help="Plan, send and track bulk SMS, email, RCS and WhatsApp campaigns.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear error line and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail to stderr.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on; 0.0.0.0 to serve other containers.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8025,
    api_key: Annotated[list[str] | None, typer.Option("--api-key", help="Accepted API key (repeatable).")] = None,
    plan: Annotated[str, typer.Option(help="Pixabits plan whose limits apply: starter|growth|enterprise|premium.")] = "growth",
    noxitel_rate: Annotated[float, typer.Option(help="Noxitel requests per second per key (burst = rate).")] = 100.0,
    seed: Annotated[int, typer.Option(help="Seed for delivery outcomes, capability and faults.")] = 0,
    credits: Annotated[float, typer.Option(help="Starting wallet credits per key.")] = 10_000_000.0,
    dlr_delay: Annotated[float, typer.Option(help="Seconds until a delivery report settles.")] = 2.0,
    delivered: Annotated[float, typer.Option(help="Share of messages delivered.")] = 0.9,
    failed: Annotated[float, typer.Option(help="Share of messages failed (the rest of the non-delivered expire).")] = 0.07,
    rcs_share: Annotated[float, typer.Option(help="Share of numbers whose device takes RCS.")] = 0.6,
    fault_5xx: Annotated[float, typer.Option("--fault-5xx", help="Share of requests answered 5xx.")] = 0.0,
    fault_drop: Annotated[float, typer.Option(help="Share of accepted requests whose connection is dropped before the answer.")] = 0.0,
    latency_ms: Annotated[float, typer.Option(help="Added latency per request, in milliseconds.")] = 0.0,
    webhook_url: Annotated[str | None, typer.Option(help="Where Pixabits events are pushed (its dashboard setting).")] = None,
    webhook_secret: Annotated[
        str | None,
        typer.Option(envvar="CAMPAIGN_WEBHOOK_SECRET", help="Secret for the X-Signature HMAC of pushed events."),
    ] = None,
    allow_ip: Annotated[list[str] | None, typer.Option("--allow-ip", help="Noxitel IP allow-list (default: any).")] = None,
) -> None:
    """Run the provider sandbox: Pixabits at the root, Noxitel under /api/v2."""
    from engine.sandbox.config import SandboxConfig
    from engine.sandbox.server import run_forever

    try:
        config = SandboxConfig(
            api_keys=tuple(api_key or ("sandbox",)),
            plan=plan.lower(),
            noxitel_rate=noxitel_rate,
            seed=seed,
            credits=credits,
            dlr_delay=dlr_delay,
            delivered_share=delivered,
            failed_share=failed,
            rcs_share=rcs_share,
            fault_5xx_share=fault_5xx,
            fault_drop_share=fault_drop,
            latency_ms=latency_ms,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            allowed_ips=tuple(allow_ip or ()),
        )
        run_forever(config, host, port)
    except CampaignError as exc:
        raise fail(str(exc)) from None
