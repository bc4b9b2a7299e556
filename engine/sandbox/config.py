"""The sandbox's knobs: accounts, plan limits, delivery outcomes and faults.

All of them can be changed on a running sandbox through `POST /_sandbox/config`,
so one sandbox process serves a whole test session.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from engine.errors import ConfigurationError
from engine.providers.limits import PIXABITS_PLANS


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
    webhook_secret: str | None = None
    allowed_ips: tuple[str, ...] = ()
    max_sms_per_call: int = 50_000
    max_email_per_call: int = 10_000
    key_plans: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.plan not in PIXABITS_PLANS:
            raise ConfigurationError(f"unknown plan {self.plan!r}; expected one of {', '.join(PIXABITS_PLANS)}")
        for name in (
            "delivered_share",
            "failed_share",
            "rcs_share",
            "whatsapp_window_share",
            "fault_5xx_share",
            "fault_drop_share",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigurationError(f"{name} must be between 0 and 1, not {value}")
        if self.delivered_share + self.failed_share > 1.0:
            raise ConfigurationError("delivered and failed shares add up to more than 1")
        if self.noxitel_rate <= 0:
            raise ConfigurationError("the Noxitel rate must be positive")
        if not self.api_keys:
            raise ConfigurationError("the sandbox needs at least one API key")

    def plan_for(self, key: str) -> str:
        return self.key_plans.get(key, self.plan)

    def updated(self, changes: dict[str, Any]) -> SandboxConfig:
        """A copy with `changes` applied; unknown names are an error rather than silently ignored."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ConfigurationError(f"unknown sandbox settings: {', '.join(sorted(unknown))}")
        for name in ("api_keys", "allowed_ips"):
            if name in changes:
                changes[name] = tuple(changes[name])
        return replace(self, **changes)
