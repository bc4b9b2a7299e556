"""Published plan limits of the providers.

These are facts of the providers' accounts, shared by the throttle (which must
stay under them) and the sandbox (which enforces them as the real services do).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RatePlan:
    """Requests per second with a burst allowance, and an optional daily message quota."""

    name: str
    rate: float
    burst: int
    daily_messages: int | None = None


#: Pixabits plan table ("Rate limits are enforced per API key").
PIXABITS_PLANS: dict[str, RatePlan] = {
    "starter": RatePlan("starter", rate=10, burst=50, daily_messages=1_000),
    "growth": RatePlan("growth", rate=200, burst=1_000),
    "enterprise": RatePlan("enterprise", rate=1_000, burst=5_000),
    "premium": RatePlan("premium", rate=5_000, burst=10_000),
}


def noxitel_plan(rate: float) -> RatePlan:
    """Noxitel publishes no plan table; the account's rate is configured and its burst equals it."""
    return RatePlan("noxitel", rate=rate, burst=max(1, int(rate)))


#: Recipients per batch on endpoints that take one recipient per call: enough calls that a
#: campaign is a handful of tasks rather than one task per message.
PER_RECIPIENT_BATCH = 1_000
