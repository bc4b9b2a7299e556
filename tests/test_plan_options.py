"""The plan options and the plan summary as typed values, and what they must keep: a recurring schedule stored
before `PlanOptions` existed still reads back and runs, new ones are stored byte for byte as before, and the
summary's JSON keeps its keys in their order."""

from __future__ import annotations

import inspect
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from sqlalchemy import Engine

from engine.campaigns.lifecycle import status
from engine.campaigns.schedules import overview, scan
from engine.cli.plan import plan
from engine.planning.options import PlanOptions
from engine.planning.planner import PlanContext, PlanRequest, build_plan
from engine.planning.pricing import PriceTable
from engine.planning.render import encode
from engine.planning.summary import Encodings, ScheduledStart
from engine.settings import Settings
from engine.store import models
from engine.store.db import open_database

TEMPLATE_ID = "1207161234567890123"  # shipped in config/dlt_templates.csv
MESSAGE = "Hi #name#, your order #order# has shipped and will reach you by Friday. -ACME"

#: The option names, in order, as the code before `PlanOptions` listed them (`PLAN_OPTIONS`) and stored them.
OLD_KEYS = (
    "contacts",
    "channel",
    "provider",
    "message",
    "sender",
    "dlt_template_id",
    "subject",
    "html",
    "agent_id",
    "fallback_message",
    "to_column",
    "smart_encoding",
    "max_cost",
    "spread",
    "batch_size",
    "dlt_var_max",
    "rejects",
    "name",
    "check_balance",
    "window",
    "window_tz",
)
OLD_PATHS = ("contacts", "html", "rejects")


def old_definition(options: dict[str, Any]) -> str:
    """How a recurring schedule's options were stored before `PlanOptions` (`schedules._definition`), verbatim."""
    saved = {key: options.get(key) for key in OLD_KEYS}
    for key in OLD_PATHS:
        path = saved[key]
        if path is not None:
            saved[key] = str(Path(path).expanduser().resolve())
    return orjson.dumps(saved).decode()


def stored_before(folder: Path) -> str:
    """A definition as the old code wrote it for `campaign send --every ... --skip-balance` with many options."""
    return (
        f'{{"contacts":"{folder}/weekly.csv","channel":"sms","provider":"noxitel","message":"{MESSAGE}",'
        f'"sender":"ACMEIN","dlt_template_id":"{TEMPLATE_ID}","subject":null,"html":null,"agent_id":null,'
        '"fallback_message":null,"to_column":"mobile","smart_encoding":true,"max_cost":250.5,"spread":false,'
        f'"batch_size":500,"dlt_var_max":30,"rejects":"{folder}/weekly.rejects.csv","name":"weekly",'
        '"check_balance":false,"window":"09:00-21:00","window_tz":"Asia/Kolkata"}'
    )


def contacts(path: Path, count: int) -> Path:
    rows = "".join(f"Asha,{9_200_000_000 + i},A{i}\n" for i in range(count))
    path.write_text("name,mobile,order\n" + rows, encoding="utf-8")
    return path


def test_a_definition_stored_before_reads_back_to_the_same_options(tmp_path: Path) -> None:
    folder = tmp_path.resolve()
    definition = stored_before(folder)
    options = PlanOptions.from_json(definition)
    assert options == PlanOptions(
        contacts=folder / "weekly.csv",
        channel="sms",
        provider="noxitel",
        message=MESSAGE,
        sender="ACMEIN",
        dlt_template_id=TEMPLATE_ID,
        to_column="mobile",
        smart_encoding=True,
        max_cost=250.5,
        spread=False,
        batch_size=500,
        dlt_var_max=30,
        rejects=folder / "weekly.rejects.csv",
        name="weekly",
        check_balance=False,
        window="09:00-21:00",
        window_tz="Asia/Kolkata",
    )
    assert options.to_json() == definition  # and written back byte for byte


@pytest.mark.parametrize(
    "chosen",
    [
        {"contacts": Path("c.csv"), "message": "Hi"},
        {
            "contacts": Path("lists/c.csv"),
            "channel": "email",
            "provider": "pixabits",
            "sender": "news@example.com",
            "subject": "Hello #name#",
            "html": Path("~/body.html"),
            "agent_id": "agent",
            "fallback_message": "Hi",
            "max_cost": 12.0,
            "batch_size": 10,
            "rejects": Path("out/r.csv"),
            "name": "Ünïcode “quotes”",
            "window": "9-21",
        },
    ],
)
def test_definitions_are_written_as_the_old_code_wrote_them(
    chosen: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths are stored resolved, from wherever the command ran
    options = PlanOptions(**chosen)
    as_the_command_gave_them = {name: getattr(options, name) for name in OLD_KEYS}
    assert options.to_json() == old_definition(as_the_command_gave_them)
    assert PlanOptions.from_json(options.to_json()).to_json() == options.to_json()


def test_a_schedule_stored_before_still_lists_and_runs(tmp_path: Path) -> None:
    folder = tmp_path.resolve()
    contacts(folder / "weekly.csv", 3)
    engine: Engine = open_database(f"sqlite:///{folder / 'campaigns.db'}")
    now = datetime(2030, 1, 7, 4, 31, tzinfo=UTC)  # a Monday, 10:01 in India
    with engine.begin() as connection:
        connection.execute(
            models.Schedule.__table__.insert().values(
                name="weekly",
                cron="0 10 * * MON",
                tz="Asia/Kolkata",
                definition=stored_before(folder),
                state=models.ScheduleState.ACTIVE.value,
                next_run_at=now - timedelta(minutes=1),
                runs=0,
            )
        )
    try:
        assert overview(engine)[0]["what"] == "weekly.csv: weekly"
        result = scan(engine, Settings(), now)
        assert result.refused == [] and len(result.planned) == 1
        campaign = status(engine, result.planned[0])
        assert (campaign.name, campaign.messages) == ("weekly 2030-01-07 10:00 IST", 3)
    finally:
        engine.dispose()


def test_the_options_default_as_the_plan_command_does() -> None:
    command = inspect.signature(plan).parameters
    for option in fields(PlanOptions):
        assert command[option.name].default == (
            inspect.Parameter.empty if option.name == "contacts" else option.default
        ), option.name


def test_the_summary_json_keeps_its_keys_in_order(tmp_path: Path) -> None:
    path = contacts(tmp_path / "c.csv", 3)
    request = PlanRequest(contacts=path, channel="sms", provider="noxitel", message=MESSAGE, sender="ACMEIN")
    summary = build_plan(request, PlanContext(prices=PriceTable.load())).summary
    assert list(summary.as_json()) == [
        "file",
        "encoding",
        "delimiter",
        "address_column",
        "channel",
        "provider",
        "sender",
        "rows",
        "valid",
        "rejected",
        "rejected_by_reason",
        "duplicates",
        "suppressed",
        "messages",
        "segments",
        "encodings",
        "smart_encoding_replacements",
        "batches",
        "largest_batch",
        "days",
        "estimated_cost",
        "currency",
        "dlt_template_id",
        "rejects_file",
        "campaign_id",
        "previews",
        "warnings",
        "balance",
        "window",
        "starts_at",
        "prices",
    ]
    assert list(summary.as_json()["days"][0]) == ["day", "messages", "batches", "starts_at"]
    summary.schedule = ScheduledStart(datetime(2030, 1, 7, 4, 30, tzinfo=UTC), "Asia/Kolkata", None)
    assert list(summary.as_json())[-3:] == ["scheduled_at", "scheduled_tz", "recurrence"]


def test_the_encodings_read_as_the_encoder_reports_them() -> None:
    encoded = encode(pa.array(["plain", "₹ rupee", "अ", "plain again"]))
    assert Encodings.of(encoded).as_json() == encoded.summary()
