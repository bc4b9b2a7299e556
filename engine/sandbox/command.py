"""`campaign sandbox`: run the provider sandbox as its own service.

The command lives with the sandbox because its options are the providers'
own plans and limits; the CLI only registers it. Its secrets are its own
(`SANDBOX_CONTROL_TOKEN`, `SANDBOX_WEBHOOK_SECRET`), never the engine's: a
sandbox that signed with the receiver's production secret could make it
believe any event.
"""

from __future__ import annotations

import secrets
from typing import Annotated

import typer

from engine.errors import ConfigurationError
from engine.sandbox.config import SandboxConfig
from engine.sandbox.server import run_forever
from engine.settings import MAX_SMS_PARTS

Option = typer.Option


def sandbox(
    host: Annotated[str, Option(help="Interface to listen on; 0.0.0.0 to serve other containers.")] = "127.0.0.1",
    port: Annotated[int, Option(help="Port to listen on (0 picks a free one).")] = 8025,
    api_key: Annotated[list[str] | None, Option("--api-key", help="Accepted API key (repeatable).")] = None,
    plan: Annotated[str, Option(help="Pixabits plan: starter|growth|enterprise|premium.")] = "growth",
    noxitel_rate: Annotated[float, Option(help="Noxitel requests per second per key (burst = rate).")] = 100.0,
    seed: Annotated[int, Option(help="Seed for delivery outcomes, capability and faults.")] = 0,
    credits: Annotated[float, Option(help="Starting wallet credits per key.")] = 10_000_000.0,
    dlr_delay: Annotated[float, Option(help="Seconds until a delivery report settles.")] = 2.0,
    delivered: Annotated[float, Option(help="Share of messages delivered.")] = 0.9,
    failed: Annotated[float, Option(help="Share of messages failed; the rest of the undelivered expire.")] = 0.07,
    rcs_share: Annotated[float, Option(help="Share of numbers whose device takes RCS.")] = 0.6,
    fault_5xx: Annotated[float, Option("--fault-5xx", help="Share of requests answered 5xx.")] = 0.0,
    fault_drop: Annotated[float, Option(help="Share of accepted requests dropped before the answer.")] = 0.0,
    latency_ms: Annotated[float, Option(help="Added latency per request, in milliseconds.")] = 0.0,
    webhook_url: Annotated[str | None, Option(help="Where Pixabits events are pushed (its dashboard setting).")] = None,
    webhook_secret: Annotated[
        str | None, Option(envvar="SANDBOX_WEBHOOK_SECRET", help="Secret for the X-Signature HMAC of pushed events.")
    ] = None,
    allow_ip: Annotated[list[str] | None, Option("--allow-ip", help="Noxitel IP allow-list (default: any).")] = None,
    max_sms_parts: Annotated[int, Option(help="The most parts one SMS may take; longer ones are refused.")] = (
        MAX_SMS_PARTS
    ),
    control_token: Annotated[
        str | None,
        Option(
            envvar="SANDBOX_CONTROL_TOKEN",
            help="Token /_sandbox/* requests must carry (Authorization: Bearer); unset: one is made up and printed.",
        ),
    ] = None,
) -> None:
    """Run the provider sandbox: Pixabits at the root, Noxitel under /api/v2."""
    if webhook_url and not webhook_secret:
        raise ConfigurationError(
            "--webhook-url needs --webhook-secret (or SANDBOX_WEBHOOK_SECRET): the receiver refuses unsigned events"
        )
    token = control_token or secrets.token_urlsafe(24)
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
        max_sms_parts=max_sms_parts,
        control_token=token,
    )
    run_forever(config, host, port, show_token=not control_token)
