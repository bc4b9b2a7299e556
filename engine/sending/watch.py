"""Whether the campaign of a batch in hand is still running, read again between provider calls.

A pause or a cancel only changes the campaign's row (`engine.campaigns.lifecycle`).
Claims see it at once, but a batch already claimed may still have a thousand
per-recipient calls to make, or a long wait on the throttle before its one
bulk call. So before each call its sender asks this watch, which reads the
campaign's state (one SELECT by primary key) at most every `every` seconds:
calls stop within about a second of the request, without a query per call.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine, select

from engine.store import models
from engine.store.states import CampaignState

#: How often a sender in the middle of a batch reads its campaign's state, at most.
EVERY_SECONDS = 0.5


class Stopped(Exception):
    """The campaign is no longer running (`state` says what it is now): the next call is not made."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


class Watch:
    """The campaign's state as last read; a claim has just found it running, so the first read waits too."""

    __slots__ = ("_read_at", "campaign_id", "engine", "every")

    def __init__(self, engine: Engine, campaign_id: int, every: float = EVERY_SECONDS) -> None:
        self.engine = engine
        self.campaign_id = campaign_id
        self.every = every
        self._read_at = time.monotonic()

    def check(self) -> None:
        """Raise `Stopped` if the campaign has stopped running, reading its state only if it is due."""
        if time.monotonic() - self._read_at < self.every:
            return
        campaigns = models.CAMPAIGNS
        with self.engine.connect() as connection:
            state = connection.execute(
                select(campaigns.c.state).where(campaigns.c.id == self.campaign_id)
            ).scalar_one_or_none()
        self._read_at = time.monotonic()
        if state != CampaignState.RUNNING.value:
            raise Stopped(str(state))
