"""Serving an aiohttp app on a host and port: one way for every server the engine runs.

The sandbox, the webhook receiver of `campaign web`, and local mode's
in-process receiver all serve the same way: on the current event loop, for as
long as a context is open, yielding the URL they answer on (port 0 picks a
free port). `run_until_stopped` is the foreground form for commands: serve
until SIGINT or SIGTERM, and turn an address that cannot be bound into one
clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from engine.errors import ConfigurationError

#: Hosts that mean "every interface"; the URL shown for them is loopback's.
ANY_HOST = frozenset({"0.0.0.0", "::", ""})


@contextlib.asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0, **options: Any) -> AsyncIterator[str]:
    """Serve `app` until the context closes; yields its base URL. `options` go to `web.AppRunner`
    (`handler_cancellation`, `shutdown_timeout`, ...); `backlog` to the listening socket."""
    backlog = options.pop("backlog", 128)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=backlog)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        shown = "127.0.0.1" if host in ANY_HOST else host
        yield f"http://{shown}:{bound}"
    finally:
        await runner.cleanup()


def run_until_stopped(
    app: Callable[[], web.Application], host: str, port: int, started: Callable[[str], None], **options: Any
) -> None:
    """Serve the app `app()` builds (on the loop this runs) until SIGINT or SIGTERM; `started(url)` is told
    where it listens."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with serve(app(), host, port, **options) as url:
            started(url)
            await stop.wait()

    try:
        asyncio.run(main())
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
