"""What the webhook receiver does with pushed events: reports to their messages, opt-outs to the suppression list.

A reply that is an opt-out word (STOP, UNSUBSCRIBE, ...) and an email hard
bounce both put the address on the suppression list, so no later campaign
reaches it.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from engine import dlr
from engine.providers.base import DeliveryReport, InboundMessage, WebhookEvent
from engine.suppressions import add

log = logging.getLogger(__name__)

OPT_OUT_WORDS = frozenset({"stop", "stop all", "unsubscribe", "opt out", "optout", "opt-out", "cancel", "end", "quit"})


class PushedEvents:
    """The receiver's listener: applies each pushed body's events as it comes."""

    def __init__(self, engine: Engine, region: str) -> None:
        self.engine = engine
        self.region = region

    async def __call__(self, provider: str, events: list[WebhookEvent]) -> None:
        reports = [e for e in events if isinstance(e, DeliveryReport)]
        opt_outs = [e.sender for e in events if isinstance(e, InboundMessage) and _opts_out(e.text)]
        bounced = [r.to for r in reports if r.status == "email.bounced" and (r.detail or "").lower() == "hard"]
        for addresses, reason in ((opt_outs, "opt-out reply"), (bounced, "hard bounce")):
            if addresses:
                added, _ = add(self.engine, addresses, reason=reason, source=provider, region=self.region)
                log.info("%d addresses suppressed (%s)", added, reason)
        if reports:
            dlr.apply_pushed(self.engine, reports)


def _opts_out(text: str) -> bool:
    return " ".join(text.lower().replace(".", " ").replace("!", " ").split()) in OPT_OUT_WORDS
