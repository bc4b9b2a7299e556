"""Configuration is read by its documented names, from the environment or `.env`, and keys stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.settings import SANDBOX, Settings

ENV = {
    "CAMPAIGN_DATABASE_URL": "postgresql+psycopg://app@db/campaigns",
    "CAMPAIGN_BROKER_URL": "redis://redis:6379/0",
    "CAMPAIGN_WEBHOOK_SECRET": "whsec-abcdef",
    "CAMPAIGN_PUBLIC_URL": "https://hooks.acme.example",
    "CAMPAIGN_REQUIRE_DLT": "true",
    "PIXABITS_API_KEY": "pxb_live_0123456789",
    "PIXABITS_BASE_URL": "https://api.pixabits.ai/",
    "PIXABITS_PLAN": "Enterprise",
    "NOXITEL_API_KEY": "nox_live_9876543210",
    "NOXITEL_BASE_URL": "https://dashboard.noxitel.com/api/v2",
    "NOXITEL_RATE": "250",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_run_locally_on_sqlite_and_the_sandbox() -> None:
    settings = Settings()
    assert settings.database_url == "sqlite:///campaigns.db"
    assert settings.local_mode
    assert settings.pixabits_base_url == settings.noxitel_base_url == SANDBOX
    assert (settings.pixabits_plan, settings.noxitel_rate) == ("growth", 100.0)
    assert settings.webhook_secret is None and settings.public_url is None and not settings.require_dlt


def test_every_documented_name_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.database_url == ENV["CAMPAIGN_DATABASE_URL"]
    assert settings.broker_url == ENV["CAMPAIGN_BROKER_URL"] and not settings.local_mode
    assert settings.webhook_secret is not None and settings.webhook_secret.get_secret_value() == "whsec-abcdef"
    assert settings.public_url == ENV["CAMPAIGN_PUBLIC_URL"]
    assert settings.require_dlt is True
    assert settings.pixabits_api_key.get_secret_value() == ENV["PIXABITS_API_KEY"]
    assert settings.pixabits_base_url == "https://api.pixabits.ai"
    assert settings.pixabits_plan == "enterprise"
    assert settings.noxitel_api_key.get_secret_value() == ENV["NOXITEL_API_KEY"]
    assert settings.noxitel_base_url == ENV["NOXITEL_BASE_URL"]
    assert settings.noxitel_rate == 250.0


def test_a_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PIXABITS_PLAN=starter\nNOXITEL_API_KEY=from-dotenv-123\n")
    settings = Settings()
    assert settings.pixabits_plan == "starter"
    assert settings.noxitel_api_key.get_secret_value() == "from-dotenv-123"


def test_keys_never_show_when_settings_are_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    shown = f"{settings!r} {settings} {settings.model_dump()} {settings.model_dump_json()}"
    for secret in ("pxb_live_0123456789", "nox_live_9876543210", "whsec-abcdef"):
        assert secret not in shown


def test_database_and_broker_passwords_never_show_when_settings_are_printed() -> None:
    settings = Settings(
        database_url="postgresql+psycopg://campaign:db-pass-4711@db:5432/campaigns",
        broker_url="redis://:redis-pass-0815@redis:6379/0",
    )
    shown = f"{settings!r} {settings}"
    assert "db-pass-4711" not in shown and "redis-pass-0815" not in shown
    assert "postgresql+psycopg://campaign:***@db:5432/campaigns" in shown
    assert settings.database_url.endswith(":db-pass-4711@db:5432/campaigns")  # still there for connecting


def test_an_unknown_plan_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXABITS_PLAN", "platinum")
    monkeypatch.setenv("PIXABITS_API_KEY", "pxb_live_0123456789")
    with pytest.raises(ValidationError, match="unknown Pixabits plan 'platinum'") as caught:
        Settings()
    assert "pxb_live_0123456789" not in str(caught.value)
