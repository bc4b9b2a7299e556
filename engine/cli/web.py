"""`campaign web`: the webhook receiver, for the delivery reports and replies providers push."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Annotated

import typer
from aiohttp import web

from engine.accounts import PROVIDERS, make_provider
from engine.errors import ConfigurationError
from engine.reports.receiver import PushedEvents
from engine.settings import get_settings
from engine.store.db import open_database
from engine.web.webhooks import ROUTES, build_app


def web_command(
    host: Annotated[str, typer.Option(help="Interface to listen on; 0.0.0.0 to be reached from outside.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8080,
) -> None:
    """Receive signed webhooks: POST /webhooks/pixabits, /webhooks/noxitel, /webhooks/noxitel/rcs."""
    settings = get_settings()
    if settings.webhook_secret is None:
        raise ConfigurationError("set CAMPAIGN_WEBHOOK_SECRET: the receiver only takes events signed with it")
    engine = open_database(settings.database_url)

    async def main() -> None:
        parsers = {name: make_provider(name, settings, base_url="http://127.0.0.1:9") for name in PROVIDERS}
        listener = PushedEvents.for_settings(engine, settings)
        app = build_app(settings.webhook_secret.get_secret_value(), parsers, listener)  # type: ignore[union-attr]
        app.cleanup_ctx.append(listener.applying)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            print(f"Webhook receiver listening on http://{host}:{bound} ({', '.join(ROUTES)})", flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()
            for parser in parsers.values():
                await parser.aclose()

    try:
        asyncio.run(main())
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        engine.dispose()
    print("Webhook receiver stopped", file=sys.stderr, flush=True)


def register(app: typer.Typer) -> None:
    app.command("web")(web_command)
