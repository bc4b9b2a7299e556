"""What the sandbox remembers: accounts (wallet, rate bucket, daily quota), sent messages, and stats.

Messages are stored per accepted request ("a send") as parallel lists, with ids
derived from the send's token and the recipient's index, so accepting a
50,000-recipient call costs a few list operations rather than 50,000 objects.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.providers.limits import PIXABITS_PLANS, RatePlan, noxitel_plan
from engine.redact import mask_secret
from engine.sandbox.config import SandboxConfig


class Clock:
    """Wall time with an adjustable offset, so tests can move the sandbox to tomorrow."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)


class Stalls:
    """How long the sandbox's own event loop was held up (a loaded machine), in all.

    A real provider counts a request when it arrives; the sandbox can only count
    it when its loop gets to it. After a stall, requests a client spaced out
    correctly are all read at once, and a bucket refilled only up to its burst
    would refuse them (a 429 the client did not cause). So the time the loop
    stood still is credited to every bucket beyond its burst.
    """

    TICK = 0.05

    def __init__(self) -> None:
        self.total = 0.0

    async def measure(self) -> None:
        """Run for as long as the sandbox serves: each tick that comes late adds its lateness."""
        while True:
            began = time.monotonic()
            await asyncio.sleep(self.TICK)
            late = time.monotonic() - began - self.TICK
            if late > self.TICK:
                self.total += late


class TokenBucket:
    """The provider-side limit: `rate` requests per second with `burst` in reserve."""

    def __init__(self, plan: RatePlan) -> None:
        self.rate = plan.rate
        self.burst = float(plan.burst)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.stalled = 0.0

    def take(self, stalled: float = 0.0) -> float:
        """Take one token; 0 when allowed, else the seconds until one is available. `stalled` is the loop's
        stall time so far (`Stalls.total`): what accrued since the last take may exceed the burst."""
        now = time.monotonic()
        credit = max(0.0, stalled - self.stalled) * self.rate
        self.stalled = stalled
        # A credit not yet spent is kept (never more than it was), while plain refill stops at the burst.
        self.tokens = min(max(self.burst, self.tokens) + credit, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass(slots=True)
class Account:
    """One API key's standing with one provider."""

    key: str
    provider: str
    plan: RatePlan
    credits: float
    bucket: TokenBucket
    daily_day: str = ""
    daily_used: int = 0

    def daily_room(self, today: str) -> int | None:
        """Messages still allowed today, or None without a daily quota."""
        if self.plan.daily_messages is None:
            return None
        if today != self.daily_day:
            self.daily_day, self.daily_used = today, 0
        return self.plan.daily_messages - self.daily_used


@dataclass(slots=True)
class Send:
    """One accepted request: its recipients in order and what the provider knows about it."""

    token: str
    provider: str
    channel: str
    key: str
    addresses: list[str]
    accepted_at: float
    batch_id: str | None = None
    notify_url: str | None = None
    dlt_missing: bool = False
    fallback: bool = False
    campaign: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def message_id(self, index: int) -> str:
        return f"{self.token}-{index:06d}"

    def message_ids(self) -> list[str]:
        token = self.token
        return [f"{token}-{index:06d}" for index in range(len(self.addresses))]


class RateWindow:
    """Highest number of requests seen in any one-second window."""

    __slots__ = ("peak", "times")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.peak = 0

    def hit(self, now: float) -> None:
        times = self.times
        times.append(now)
        while times[0] <= now - 1.0:
            times.popleft()
        self.peak = max(self.peak, len(times))


@dataclass(slots=True)
class EndpointStats:
    requests: int = 0
    accepted_requests: int = 0
    messages: int = 0
    rate_limited: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    window: RateWindow = field(default_factory=RateWindow)
    recipients: Counter[str] = field(default_factory=Counter)

    def as_dict(self, with_recipients: bool) -> dict[str, Any]:
        duplicates = {k: v for k, v in self.recipients.items() if v > 1}
        out: dict[str, Any] = {
            "requests": self.requests,
            "accepted_requests": self.accepted_requests,
            "messages": self.messages,
            "rate_limited": self.rate_limited,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "max_rate_1s": self.window.peak,
            "distinct_recipients": len(self.recipients),
            "duplicate_recipients": duplicates,
        }
        if with_recipients:
            out["recipients"] = dict(self.recipients)
        return out


class SandboxState:
    """Everything the sandbox knows; reset by `POST /_sandbox/reset`."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.stalls = Stalls()
        self.reset()

    def reset(self) -> None:
        self.accounts: dict[tuple[str, str], Account] = {}
        self.sends: dict[str, Send] = {}
        self.by_batch: dict[str, Send] = {}
        self.by_campaign: dict[str, list[Send]] = {}
        self.endpoints: dict[str, EndpointStats] = {}
        self.account_windows: dict[str, RateWindow] = {}
        self.bodies: dict[str, deque[Any]] = {}
        self.otps: dict[str, str] = {}
        self.agents: dict[int, dict[str, Any]] = {}
        self.test_devices: dict[int, set[str]] = {}
        self._counter = itertools.count(1)

    # accounts -------------------------------------------------------------

    def account(self, provider: str, key: str) -> Account:
        found = self.accounts.get((provider, key))
        if found is None:
            if provider == "pixabits":
                plan = PIXABITS_PLANS[self.config.plan_for(key)]
            else:
                plan = noxitel_plan(self.config.noxitel_rate)
            found = Account(key, provider, plan, self.config.credits, TokenBucket(plan))
            self.accounts[(provider, key)] = found
        return found

    def today(self) -> str:
        return self.clock.now().date().isoformat()

    def seconds_to_midnight(self) -> float:
        now = self.clock.now()
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
        return max(1.0, math.ceil((midnight - now).total_seconds()))

    # messages -------------------------------------------------------------

    def new_token(self, prefix: str) -> str:
        return f"{prefix}{next(self._counter):x}{secrets.token_hex(4)}"

    def record(self, send: Send) -> Send:
        self.sends[send.token] = send
        if send.batch_id:
            self.by_batch[send.batch_id] = send
        if send.campaign:
            self.by_campaign.setdefault(send.campaign, []).append(send)
        return send

    def find_message(self, message_id: str) -> tuple[Send, int] | None:
        token, _, index = message_id.rpartition("-")
        send = self.sends.get(token)
        if send is None or not index.isdigit() or int(index) >= len(send.addresses):
            return None
        return send, int(index)

    # stats ----------------------------------------------------------------

    def remember_body(self, endpoint: str, body: Any) -> None:
        """Keep the last few parsed request bodies per endpoint, so tests can check what went on the wire."""
        self.bodies.setdefault(endpoint, deque(maxlen=3)).append(body)

    def endpoint(self, name: str) -> EndpointStats:
        stats = self.endpoints.get(name)
        if stats is None:
            stats = self.endpoints[name] = EndpointStats()
        return stats

    def stats(self, with_recipients: bool = True) -> dict[str, Any]:
        return {
            "endpoints": {name: s.as_dict(with_recipients) for name, s in sorted(self.endpoints.items())},
            "accounts": {
                f"{provider}:{mask_secret(key)}": {
                    "plan": account.plan.name,
                    "credits": round(account.credits, 4),
                    "daily_used": account.daily_used,
                    "max_rate_1s": self.account_windows[f"{provider}:{key}"].peak
                    if f"{provider}:{key}" in self.account_windows
                    else 0,
                }
                for (provider, key), account in sorted(self.accounts.items())
            },
        }
