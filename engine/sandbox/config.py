"""The sandbox's knobs: accounts, plan limits, delivery outcomes and faults.

All of them can be changed on a running sandbox through `POST /_sandbox/config`,
so one sandbox process serves a whole test session; the control token, which
guards that endpoint, is fixed for the life of the process.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from engine.errors import ConfigurationError
from engine.providers.limits import PIXABITS_PLANS
from engine.settings import MAX_SMS_PARTS

#: Knobs that are shares of messages or requests, each between 0 and 1.
SHARES = (
    "delivered_share",
    "failed_share",
    "rcs_share",
    "whatsapp_window_share",
    "fault_5xx_share",
    "fault_drop_share",
)
#: Knobs a running sandbox keeps: the token is what guards changing the others.
FIXED = frozenset({"control_token"})
#: The shortest control token taken: long enough not to be guessed over the network.
MIN_TOKEN_LENGTH = 16
#: The most parts an SMS could be split into (the concatenation header counts them in one byte).
MOST_PARTS = 255


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    api_keys: tuple[str, ...] = ("sandbox",)
    plan: str = "growth"
    noxitel_rate: float = 100.0
    seed: int = 0
    credits: float = 10_000_000.0
    dlr_delay: float = 2.0
    delivered_share: float = 0.9
    failed_share: float = 0.07
    rcs_share: float = 0.6
    whatsapp_window_share: float = 0.3
    pixabits_rcs_fallback: bool = True
    fault_5xx_share: float = 0.0
    fault_drop_share: float = 0.0
    latency_ms: float = 0.0
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    allowed_ips: tuple[str, ...] = ()
    max_sms_per_call: int = 50_000
    max_email_per_call: int = 10_000
    #: An SMS that would take more parts is refused, as operators refuse it.
    max_sms_parts: int = MAX_SMS_PARTS
    key_plans: dict[str, str] = field(default_factory=dict)
    #: What `/_sandbox/*` requests must carry (`Authorization: Bearer`); None: they are all refused.
    control_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.plan not in PIXABITS_PLANS:
            raise ConfigurationError(f"unknown plan {self.plan!r}; expected one of {', '.join(PIXABITS_PLANS)}")
        for name in SHARES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigurationError(f"{name} must be between 0 and 1, not {value}")
        if self.delivered_share + self.failed_share > 1.0:
            raise ConfigurationError("delivered and failed shares add up to more than 1")
        if self.noxitel_rate <= 0:
            raise ConfigurationError("the Noxitel rate must be positive")
        if not self.api_keys:
            raise ConfigurationError("the sandbox needs at least one API key")
        if not 1 <= self.max_sms_parts <= MOST_PARTS:
            raise ConfigurationError(f"max_sms_parts must be between 1 and {MOST_PARTS}, not {self.max_sms_parts}")
        if self.control_token is not None and len(self.control_token) < MIN_TOKEN_LENGTH:
            raise ConfigurationError(f"the control token must be at least {MIN_TOKEN_LENGTH} characters long")

    def plan_for(self, key: str) -> str:
        return self.key_plans.get(key, self.plan)

    def updated(self, changes: dict[str, Any]) -> SandboxConfig:
        """A copy with `changes` applied; unknown names are an error rather than silently ignored."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ConfigurationError(f"unknown sandbox settings: {', '.join(sorted(unknown))}")
        fixed = FIXED & set(changes)
        if fixed:
            raise ConfigurationError(f"{', '.join(sorted(fixed))} cannot be changed on a running sandbox")
        for name in ("api_keys", "allowed_ips"):
            if name in changes:
                changes[name] = tuple(changes[name])
        return replace(self, **changes)
