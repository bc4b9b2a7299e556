"""`campaign web`: the webhook receiver, for the delivery reports and replies providers push."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from aiohttp import web

from engine.providers import CLIENTS
from engine.reports.receiver import PushedEvents
from engine.serve import run_until_stopped
from engine.settings import get_settings
from engine.store.db import open_database
from engine.web.webhooks import ROUTES, Limits, build_app, signing_secret


def web_command(
    host: Annotated[str, typer.Option(help="Interface to listen on; 0.0.0.0 to be reached from outside.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8080,
) -> None:
    """Receive signed webhooks: POST /webhooks/pixabits, /webhooks/noxitel, /webhooks/noxitel/rcs."""
    settings = get_settings()
    secret = signing_secret(settings)
    limits = Limits.of(settings)
    engine = open_database(settings.database_url)

    def app() -> web.Application:
        listener = PushedEvents.for_settings(engine, settings)
        receiver = build_app(secret, CLIENTS, listener, limits)
        receiver.cleanup_ctx.append(listener.applying)
        return receiver

    def started(url: str) -> None:
        bound = url.rsplit(":", 1)[1]
        print(f"Webhook receiver listening on http://{host}:{bound} ({', '.join(ROUTES)})", flush=True)

    try:
        run_until_stopped(app, host, port, started, **limits.serving())
    finally:
        engine.dispose()
    print("Webhook receiver stopped", file=sys.stderr, flush=True)


def register(app: typer.Typer) -> None:
    app.command("web")(web_command)
