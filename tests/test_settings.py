"""Configuration is read by its documented names, from the environment or `.env`, and keys stay secret."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from engine.settings import SANDBOX, Settings
from tests.fixtures.cli import campaign

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
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)


def test_defaults_run_locally_on_sqlite_and_the_sandbox(tmp_path: Path) -> None:
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path}/data/campaign-engine/campaigns.db"
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


def test_one_database_from_any_folder_says_where_it_is(tmp_path: Path) -> None:
    """Without CAMPAIGN_DATABASE_URL the database is in the user's data folder: an opt-out recorded from one
    folder holds when a campaign is sent from another, and the first command says where the file is."""
    env = {k: v for k, v in os.environ.items() if k not in ENV} | {"XDG_DATA_HOME": str(tmp_path / "data")}
    first, second = tmp_path / "marketing", tmp_path / "elsewhere"
    first.mkdir()
    second.mkdir()
    database = tmp_path / "data" / "campaign-engine" / "campaigns.db"
    added = campaign(env, "suppress", "add", "+919876543210", cwd=first)
    assert added.returncode == 0, added.stderr
    assert f"note: a new campaign database at {database}" in added.stderr
    assert (database.stat().st_mode & 0o777, database.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    listed = campaign(env, "suppress", "list", "--json", cwd=second)
    assert [row["address"] for row in orjson.loads(listed.stdout)] == ["+919876543210"]
    assert "new campaign database" not in listed.stderr
    assert not list(first.iterdir()) and not list(second.iterdir())  # nothing left in either folder
    shown = campaign(env, "db", "current", cwd=second)
    assert f"database sqlite:///{database}" in shown.stdout


def test_a_wrong_setting_is_one_line_naming_it_and_help_still_shows(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV} | {
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "CAMPAIGN_TIMEZONE": "Mars/Olympus",
        "NOXITEL_RATE": "fast",
    }
    listed = campaign(env, "list")
    assert listed.returncode == 1 and "Traceback" not in listed.stderr
    [line] = listed.stderr.strip().splitlines()
    assert line.startswith("error: ") and "CAMPAIGN_TIMEZONE: 'Mars/Olympus' is not a time zone name" in line
    assert "NOXITEL_RATE: Input should be a valid number" in line
    assert campaign(env, "plan", "--help").returncode == 0
