"""Configuration, read from the environment and an optional `.env` file.

The variable names are part of the deployment contract (scripts, the compose
file and the docs use them), so each field is bound to its exact name instead
of being derived from a prefix. API keys are `SecretStr`: printing the settings
or a validation error never shows them.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.errors import ConfigurationError
from engine.redact import mask_url_password
from engine.windows import INDIA, SendWindow, WindowError, zone

#: Limits on what the engine reads, each the default of its setting below and of the code that applies it.
MAX_FILE_MB = 1024.0
MAX_HTML_KB = 1024.0
#: Operators commonly drop an SMS of more than 6-10 parts.
MAX_SMS_PARTS = 10
WEBHOOK_MAX_KB = 1024.0
WEBHOOK_READ_SECONDS = 10.0

#: A base URL of this value starts the embedded sandbox instead of calling a real provider.
SANDBOX = "sandbox"

#: Pixabits' plans; their limits are the provider's facts, in `engine.providers.limits.PIXABITS_PLANS`.
PlanName = Literal["starter", "growth", "enterprise", "premium"]
PLAN_NAMES: tuple[str, ...] = get_args(PlanName)


#: The folder (under the user's data directory) that holds the default database.
APP_FOLDER = "campaign-engine"


def default_database_folder() -> Path:
    """The user's data directory for the engine (made when the default database is first opened)."""
    return platformdirs.user_data_path(APP_FOLDER, appauthor=False)


def default_database_url() -> str:
    """SQLite in the user's data directory, whatever folder a command runs from: one campaign history and one
    suppression list per user, so an opt-out holds everywhere. `CAMPAIGN_DATABASE_URL` chooses another."""
    return f"sqlite:///{default_database_folder() / 'campaigns.db'}"


def _env(name: str) -> AliasChoices:
    """Bind a field to exactly one environment variable (and accept the field name in code)."""
    return AliasChoices(name)


class Settings(BaseSettings):
    """Every knob the engine reads; see the configuration table in the README."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    database_url: str = Field(default_factory=default_database_url, validation_alias=_env("CAMPAIGN_DATABASE_URL"))
    broker_url: str | None = Field(None, validation_alias=_env("CAMPAIGN_BROKER_URL"))
    webhook_secret: SecretStr | None = Field(None, validation_alias=_env("CAMPAIGN_WEBHOOK_SECRET"))
    public_url: str | None = Field(None, validation_alias=_env("CAMPAIGN_PUBLIC_URL"))
    require_dlt: bool = Field(False, validation_alias=_env("CAMPAIGN_REQUIRE_DLT"))
    default_region: str = Field("IN", validation_alias=_env("CAMPAIGN_DEFAULT_REGION"))

    pixabits_api_key: SecretStr = Field(SecretStr(SANDBOX), validation_alias=_env("PIXABITS_API_KEY"))
    pixabits_base_url: str = Field(SANDBOX, validation_alias=_env("PIXABITS_BASE_URL"))
    pixabits_plan: PlanName = Field("growth", validation_alias=_env("PIXABITS_PLAN"))

    noxitel_api_key: SecretStr = Field(SecretStr(SANDBOX), validation_alias=_env("NOXITEL_API_KEY"))
    noxitel_base_url: str = Field(SANDBOX, validation_alias=_env("NOXITEL_BASE_URL"))
    noxitel_rate: float = Field(100.0, gt=0, validation_alias=_env("NOXITEL_RATE"))

    broker_prefix: str = Field("campaign:", validation_alias=_env("CAMPAIGN_BROKER_PREFIX"))
    lease_seconds: float = Field(300.0, gt=0, validation_alias=_env("CAMPAIGN_LEASE_SECONDS"))
    sweep_seconds: float = Field(30.0, gt=0, validation_alias=_env("CAMPAIGN_SWEEP_SECONDS"))
    dlr_poll_seconds: float = Field(30.0, gt=0, validation_alias=_env("CAMPAIGN_DLR_POLL_SECONDS"))
    dlr_max_age_hours: float = Field(72.0, gt=0, validation_alias=_env("CAMPAIGN_DLR_MAX_AGE_HOURS"))
    rcs_fallback: Literal["provider", "engine"] = Field("provider", validation_alias=_env("CAMPAIGN_RCS_FALLBACK"))
    #: An RCS message with no delivery report this long after sending gets the SMS fallback (engine fallback).
    rcs_fallback_wait_seconds: float = Field(600.0, gt=0, validation_alias=_env("CAMPAIGN_RCS_FALLBACK_WAIT_SECONDS"))
    #: How often the webhook receiver retries reports parked because their message was not known yet.
    webhook_sweep_seconds: float = Field(5.0, gt=0, validation_alias=_env("CAMPAIGN_WEBHOOK_SWEEP_SECONDS"))
    #: The largest body a webhook push may have, in KiB; larger ones are refused before they are read.
    webhook_max_kb: float = Field(WEBHOOK_MAX_KB, gt=0, validation_alias=_env("CAMPAIGN_WEBHOOK_MAX_KB"))
    #: How long a client may take to send a push's body.
    webhook_read_seconds: float = Field(
        WEBHOOK_READ_SECONDS, gt=0, validation_alias=_env("CAMPAIGN_WEBHOOK_READ_SECONDS")
    )
    report_wait_seconds: float = Field(120.0, gt=0, validation_alias=_env("CAMPAIGN_REPORT_WAIT_SECONDS"))
    #: How long a message in doubt waits for the report that would clear it before `resend-ambiguous` sends it.
    resend_after_minutes: float = Field(60.0, ge=0, validation_alias=_env("CAMPAIGN_RESEND_AFTER_MINUTES"))
    clock_offset: float = Field(0.0, validation_alias=_env("CAMPAIGN_CLOCK_OFFSET"))
    send_concurrency: int = Field(4, ge=1, validation_alias=_env("CAMPAIGN_SEND_CONCURRENCY"))
    #: The zone of times written without one: `--at`, `--every`, `--window`.
    timezone: str = Field(INDIA, validation_alias=_env("CAMPAIGN_TIMEZONE"))
    #: When promotional SMS may reach Indian numbers (India's time); empty: no default window.
    promotional_window: str = Field("09:00-21:00", validation_alias=_env("CAMPAIGN_PROMOTIONAL_WINDOW"))
    schedule_scan_seconds: float = Field(30.0, gt=0, validation_alias=_env("CAMPAIGN_SCHEDULE_SCAN_SECONDS"))
    wallet_check_seconds: float = Field(3600.0, gt=0, validation_alias=_env("CAMPAIGN_WALLET_CHECK_SECONDS"))
    #: A provider balance under this (credits where it reports them, else money) is logged as a warning.
    wallet_warn_below: float = Field(1000.0, ge=0, validation_alias=_env("CAMPAIGN_WALLET_WARN_BELOW"))

    #: The largest contact, suppression or DLT CSV read, in MiB; a larger one is refused before it is read.
    max_file_mb: float = Field(MAX_FILE_MB, gt=0, validation_alias=_env("CAMPAIGN_MAX_FILE_MB"))
    #: The most SMS parts one message may take; a row whose message would take more is refused.
    max_sms_parts: int = Field(MAX_SMS_PARTS, ge=1, le=255, validation_alias=_env("CAMPAIGN_MAX_SMS_PARTS"))
    #: The largest `--html` email body read, in KiB.
    max_html_kb: float = Field(MAX_HTML_KB, gt=0, validation_alias=_env("CAMPAIGN_MAX_HTML_KB"))

    http_connect_timeout: float = Field(5.0, gt=0, validation_alias=_env("CAMPAIGN_HTTP_CONNECT_TIMEOUT"))
    http_total_timeout: float = Field(60.0, gt=0, validation_alias=_env("CAMPAIGN_HTTP_TOTAL_TIMEOUT"))

    @field_validator("pixabits_plan", mode="before")
    @classmethod
    def _plan_lower(cls, value: object) -> object:
        """Plans are written as the provider's dashboard shows them ("Growth"); compare in lower case."""
        if isinstance(value, str):
            value = value.strip().lower()
            if value not in PLAN_NAMES:
                raise ValueError(f"unknown Pixabits plan {value!r}; expected one of {', '.join(PLAN_NAMES)}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            return zone(value).key
        except WindowError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("promotional_window")
    @classmethod
    def _readable_window(cls, value: str) -> str:
        """Refused when the settings are read, not at the first promotional plan."""
        if value.strip():
            try:
                SendWindow.parse(value, INDIA)
            except WindowError as exc:
                raise ValueError(str(exc)) from None
        return value.strip()

    @property
    def promotional(self) -> SendWindow | None:
        """The window promotional SMS to India keep to by default, in India's time."""
        return SendWindow.parse(self.promotional_window, INDIA) if self.promotional_window else None

    @field_validator("pixabits_base_url", "noxitel_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        """Printed settings show the database's and the broker's URLs without their passwords (the keys are
        `SecretStr`, which print masked already)."""
        for name, value in super().__repr_args__():
            masked = name in ("database_url", "broker_url") and isinstance(value, str)
            yield name, mask_url_password(value) if masked else value

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def max_html_bytes(self) -> int:
        return int(self.max_html_kb * 1024)

    @property
    def local_mode(self) -> bool:
        """Without a broker the engine sends in-process."""
        return not self.broker_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings(...)` instead of mutating this one. A wrong
    value is a `ConfigurationError` naming each variable and what is wrong with it."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = (f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise ConfigurationError("; ".join(problems)) from None
