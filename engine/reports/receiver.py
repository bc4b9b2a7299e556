"""What the webhook receiver does with pushed events: keep them, answer, then apply them in the background.

A body's delivery reports are stored (once: a retried push stores nothing
new) before the provider gets its 200, so nothing acknowledged can be lost;
matching them to messages and folding them into statuses happens after, in a
background task that the stored events wake, and that also runs every few
seconds for reports parked because they came before their message was known.
After each round the RCS messages that did not arrive get their SMS fallback.

A reply that is an opt-out word (STOP, UNSUBSCRIBE, ...) and an email hard
bounce both put the address on the suppression list, so no later campaign
reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy import Engine

from engine.planning.suppressions import add
from engine.providers import client_class
from engine.providers.base import DeliveryReport, InboundMessage, WebhookEvent
from engine.reports import statuses
from engine.reports.rounds import ReportTimes, report_round
from engine.settings import Settings

log = logging.getLogger(__name__)

OPT_OUT_WORDS = frozenset({"stop", "stop all", "unsubscribe", "opt out", "optout", "opt-out", "cancel", "end", "quit"})


class PushedEvents:
    """The receiver's listener, and the background task that applies what it stored.

    `sweep_seconds` is how often parked reports are tried again with nothing new coming.
    """

    def __init__(self, engine: Engine, region: str, times: ReportTimes, sweep_seconds: float = 5.0) -> None:
        self.engine = engine
        self.region = region
        self.times = times
        self.sweep_seconds = sweep_seconds
        self._wake = asyncio.Event()

    @classmethod
    def for_settings(cls, engine: Engine, settings: Settings) -> PushedEvents:
        return cls(engine, settings.default_region, ReportTimes.of(settings), settings.webhook_sweep_seconds)

    async def __call__(self, provider: str, events: list[WebhookEvent]) -> None:
        reports = [e for e in events if isinstance(e, DeliveryReport)]
        opt_outs = [e.sender for e in events if isinstance(e, InboundMessage) and _opts_out(e.text)]
        bounced = [r.to for r in reports if client_class(r.provider).hard_bounce(r)]
        for addresses, reason in ((opt_outs, "opt-out reply"), (bounced, "hard bounce")):
            if addresses:
                added, _ = await asyncio.to_thread(
                    add, self.engine, addresses, reason=reason, source=provider, region=self.region
                )
                log.info("%d addresses suppressed (%s)", added, reason)
        if reports:
            await asyncio.to_thread(statuses.store_pushed, self.engine, reports)
            self._wake.set()

    async def applying(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: the background applier runs while the app does."""
        task = asyncio.create_task(self._run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sweep_seconds)
            self._wake.clear()
            try:
                await report_round(self.engine, self.times, drain=True)  # pushes are stored as they come
            except Exception:  # a database hiccup must not end the receiver; the events wait, stored
                log.exception("applying stored delivery reports failed; trying again next round")


def _opts_out(text: str) -> bool:
    return " ".join(text.lower().replace(".", " ").replace("!", " ").split()) in OPT_OUT_WORDS
