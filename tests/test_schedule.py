"""Scheduled and recurring campaigns: each starts once when due (however many scanners look), never before;
the CLI that saves, lists, cancels and runs them; the beat tasks through the real workers; the wallet check."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, select, update

from engine import clock
from engine.accounts import open_provider, plan_of
from engine.campaigns.lifecycle import state_of, status
from engine.campaigns.schedules import ScheduleError, next_occurrence, parse_at, save_recurring, scan, schedule_campaign
from engine.errors import CampaignError
from engine.planning.options import PlanOptions
from engine.sending.throttle import MemoryThrottle, account_id
from engine.sending.wallet import check_wallets
from engine.settings import Settings
from engine.store import models
from engine.store.db import open_database
from engine.windows import as_utc
from schedules.beat import beat_schedule
from tests.fixtures.campaigns import plan_campaign, write_contacts
from tests.fixtures.celery import Workers
from tests.fixtures.cli import MESSAGE, SEND, TEMPLATE_ID, run_cli
from tests.fixtures.clock import ist
from tests.fixtures.sandbox import Sandbox, sandbox_settings
from workers.app import QUEUES, make_app

C, S = models.Campaign.__table__, models.Schedule.__table__
#: The first number of these tests' contacts files (+91 92000 00000).
FIRST = 9_200_000_000
#: A draft of the `campaign send` message, with no DLT template, waiting to be scheduled.
DRAFT = {"message": MESSAGE, "dlt_on": (), "name": "Asha", "start": False}


def options(**chosen: Any) -> PlanOptions:
    """`campaign send`'s plan options: these, and every other at its default."""
    return PlanOptions(**chosen)


def concurrently(engines: list[Engine], settings: Settings) -> list[Any]:
    """One scan per engine (as from two beat processes), all let go at the same instant."""
    barrier = threading.Barrier(len(engines))

    def one(engine: Engine) -> Any:
        barrier.wait()
        return scan(engine, settings)

    with ThreadPoolExecutor(len(engines)) as pool:
        return list(pool.map(one, engines))


@pytest.fixture
def engines(database: Engine, database_url: str) -> Iterator[list[Engine]]:
    """The test's database twice over: two schedulers that share nothing but it."""
    other = open_database(database_url)
    yield [database, other]
    other.dispose()


# times --------------------------------------------------------------------------------------------------------


def test_at_is_read_in_its_zone_and_refused_in_the_past_or_unreadable() -> None:
    now = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    assert parse_at("2026-11-24 10:00", "Asia/Kolkata", now) == datetime(2026, 11, 24, 4, 30, tzinfo=UTC)
    assert parse_at("2026-11-24T10:00+01:00", "Asia/Kolkata", now) == datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    with pytest.raises(ScheduleError, match=r"is in the past: it is now 2026-11-23 11:30 IST"):
        parse_at("2026-11-23 11:00", "Asia/Kolkata", now)
    with pytest.raises(ScheduleError, match="write it as 2026-11-24 10:00"):
        parse_at("next tuesday", "Asia/Kolkata", now)
    with pytest.raises(ScheduleError, match="does not exist in America/New_York"):
        parse_at("2027-03-14 02:30", "America/New_York", now)


def test_a_cron_expression_keeps_its_wall_clock_hour_across_daylight_saving() -> None:
    before = datetime(2027, 3, 12, 16, 0, tzinfo=UTC)  # a Friday, before New York's clocks go forward
    first = next_occurrence("0 10 * * *", "America/New_York", before)
    second = next_occurrence("0 10 * * *", "America/New_York", first)
    assert (first, second) == (datetime(2027, 3, 13, 15, 0, tzinfo=UTC), datetime(2027, 3, 14, 14, 0, tzinfo=UTC))
    assert next_occurrence("0 10 * * MON", "Asia/Kolkata", before) == datetime(2027, 3, 15, 4, 30, tzinfo=UTC)
    with pytest.raises(ScheduleError, match="not a cron expression"):
        next_occurrence("every monday", "Asia/Kolkata", before)


# starting once ----------------------------------------------------------------------------------------------


def test_scheduled_campaigns_start_once_when_due_even_with_two_scanners(
    engines: list[Engine], tmp_path: Path, set_clock: Callable[[datetime], None]
) -> None:
    engine = engines[0]
    set_clock(ist(1, 9, 0))
    ids = [plan_campaign(engine, tmp_path, 3, first=FIRST, **DRAFT) for _ in range(8)]
    for campaign_id in ids:
        schedule_campaign(engine, campaign_id, ist(1, 10, 0).astimezone(UTC), "Asia/Kolkata")
    with pytest.raises(ScheduleError, match="not a draft"):
        schedule_campaign(engine, ids[0], ist(1, 11, 0).astimezone(UTC), "Asia/Kolkata")
    set_clock(ist(1, 9, 59))
    assert [r.started for r in concurrently(engines, Settings())] == [[], []]  # not before its time
    assert {state_of(engine, c) for c in ids} == {"scheduled"}
    set_clock(ist(1, 10, 0) + timedelta(seconds=1))
    scans = concurrently(engines, Settings())
    started = scans[0].started + scans[1].started
    assert sorted(started) == ids  # each once, whichever scanner got it
    assert {state_of(engine, c) for c in ids} == {"running"}
    assert [r.started for r in concurrently(engines, Settings())] == [[], []]


def test_a_recurring_schedule_plans_a_fresh_campaign_once_per_occurrence(
    engines: list[Engine], settings: Settings, tmp_path: Path, set_clock: Callable[[datetime], None]
) -> None:
    engine = engines[0]
    path = write_contacts(tmp_path / "weekly.csv", 3, FIRST, "Asha")
    set_clock(ist(1, 9, 0))
    schedule_id, first = save_recurring(
        engine,
        options(contacts=path, provider="noxitel", sender="ACMEIN", dlt_template_id=TEMPLATE_ID, message=MESSAGE),
        "30 9 * * *",
        "Asia/Kolkata",
        clock.now(),
    )
    assert first == ist(1, 9, 30)
    set_clock(ist(1, 9, 29))
    assert scan(engine, settings).planned == []
    set_clock(ist(1, 9, 31))
    scans = concurrently(engines, settings)
    planned = scans[0].planned + scans[1].planned
    assert len(planned) == 1 and not scans[0].refused + scans[1].refused
    one = status(engine, planned[0])
    assert (one.state, one.messages) == ("running", 3) and one.name.endswith(f"{first:%Y-%m-%d} 09:30 IST")
    with engine.connect() as connection:
        row = connection.execute(select(S).where(S.c.id == schedule_id)).one()
        assert connection.execute(select(C.c.schedule_id).where(C.c.id == planned[0])).scalar_one() == schedule_id
    assert (row.runs, as_utc(row.next_run_at)) == (1, ist(2, 9, 30))
    assert scan(engine, settings).planned == []

    write_contacts(path, 5, FIRST, "Asha")  # the file is read again at each run
    set_clock(ist(2, 9, 30))
    again = scan(engine, settings).planned
    assert len(again) == 1 and status(engine, again[0]).messages == 5

    set_clock(ist(5, 12, 0))  # no scheduler ran for days: the stale run is skipped, not sent late
    missed = scan(engine, settings)
    assert missed.planned == [] and "was missed" in missed.refused[0][1]
    path.unlink()
    set_clock(ist(6, 9, 30))
    failed = scan(engine, settings)
    assert failed.planned == [] and "was not sent" in failed.refused[0][1]
    with engine.connect() as connection:
        row = connection.execute(select(S).where(S.c.id == schedule_id)).one()
    assert row.state == "active" and as_utc(row.next_run_at) == ist(7, 9, 30)
    assert "was not sent" in row.last_error


def test_a_recurring_run_of_a_long_name_keeps_to_the_column_and_a_longer_name_is_refused(
    engines: list[Engine], settings: Settings, tmp_path: Path, set_clock: Callable[[datetime], None]
) -> None:
    """Each run's campaign is named the schedule's name and its time; a name that leaves no room for the time
    is shortened rather than failing every run (PostgreSQL refuses a value longer than its column)."""
    engine = engines[0]
    path = write_contacts(tmp_path / "weekly.csv", 3, FIRST, "Asha")
    set_clock(ist(1, 9, 0))
    sent = options(
        contacts=path, provider="noxitel", sender="ACMEIN", dlt_template_id=TEMPLATE_ID, message=MESSAGE, name="n" * 200
    )
    with pytest.raises(CampaignError, match="the schedule name has 201 characters; the most is 200"):
        save_recurring(engine, replace(sent, name="n" * 201), "30 9 * * *", "Asia/Kolkata", clock.now())
    save_recurring(engine, sent, "30 9 * * *", "Asia/Kolkata", clock.now())
    set_clock(ist(1, 9, 31))
    planned = scan(engine, settings).planned
    name = status(engine, planned[0]).name
    assert len(name) == 200 and name.endswith(" 09:30 IST") and name.startswith("n" * 150)


# the commands -----------------------------------------------------------------------------------------------


def test_send_at_waits_for_its_time_and_schedule_run_sends_it_once(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path, set_clock: Callable[[datetime], None]
) -> None:
    path = write_contacts(tmp_path / "c.csv", 20, FIRST, "Asha")
    set_clock(ist(1, 10, 0))
    past = run_cli(env, "send", str(path), *SEND, "--at", f"{ist(1, 9, 0):%Y-%m-%d %H:%M}", "--yes")
    assert past.exit_code == 1 and "is in the past" in past.output
    saved = run_cli(env, "send", str(path), *SEND, "--at", f"{ist(1, 11, 0):%Y-%m-%d %H:%M}", "--yes", "--json")
    assert saved.exit_code == 0, saved.output
    scheduled = orjson.loads(saved.stdout.strip().splitlines()[-1])
    assert scheduled["state"] == "scheduled" and scheduled["scheduled_at"] == ist(1, 11, 0).astimezone(UTC).isoformat()
    assert "campaign schedule run" in saved.stderr  # local mode says what starts it
    assert "nothing is due" in run_cli(env, "schedule", "run").stdout
    assert sandbox.endpoint("POST /api/v2/sms") == {}
    set_clock(ist(1, 11, 0) + timedelta(seconds=5))
    ran = run_cli(env, "schedule", "run", "--json")
    assert ran.exit_code == 0, ran.output
    done = orjson.loads(ran.stdout.strip().splitlines()[-1])
    assert (done["campaign_id"], done["state"], done["submitted"]) == (scheduled["campaign_id"], "completed", 20)
    assert "nothing is due" in run_cli(env, "schedule", "run").stdout
    accepted = sandbox.endpoint("POST /api/v2/sms")["recipients"]
    assert len(accepted) == 20 and set(accepted.values()) == {1}


def test_schedules_are_listed_and_cancelled(
    env: dict[str, str], tmp_path: Path, set_clock: Callable[[datetime], None]
) -> None:
    path = write_contacts(tmp_path / "c.csv", 5, FIRST, "Asha")
    set_clock(datetime(2027, 3, 10, 6, 0, tzinfo=UTC))  # a Wednesday
    weekly = run_cli(env, "send", str(path), *SEND, "--every", "0 10 * * MON", "--window", "09:00-21:00", "--yes")
    assert weekly.exit_code == 0, weekly.output
    assert "schedule r1 saved: '0 10 * * MON' in Asia/Kolkata; next run 2027-03-15 10:00 IST" in weekly.stdout
    assert "then 2027-03-22 10:00 IST, 2027-03-29 10:00 IST" in weekly.stdout
    once = run_cli(env, "send", str(path), *SEND, "--at", "2027-03-11 08:00", "--tz", "Europe/London", "--yes")
    assert once.exit_code == 0 and "scheduled for 2027-03-11 08:00 GMT" in once.stdout
    rows = orjson.loads(run_cli(env, "schedule", "list", "--json").stdout)
    assert [(r["id"], r["recurrence"], r["tz"], r["state"]) for r in rows] == [
        ("1", "once", "Europe/London", "scheduled"),
        ("r1", "0 10 * * MON", "Asia/Kolkata", "active"),
    ]
    assert rows[1]["next_run_at"] == "2027-03-15T04:30:00+00:00"
    table = run_cli(env, "schedule", "list").stdout
    assert "2027-03-15 10:00 IST" in table and "c.csv: Hi #name#" in table

    assert run_cli(env, "schedule", "cancel", "r1").exit_code == 0
    again = run_cli(env, "schedule", "cancel", "r1")
    assert again.exit_code == 1 and "no active recurring schedule r1" in again.output
    cancelled = run_cli(env, "schedule", "cancel", "1")
    assert cancelled.exit_code == 0 and "5 messages will not be sent" in cancelled.stdout
    rows = orjson.loads(run_cli(env, "schedule", "list", "--json").stdout)
    assert [(r["id"], r["state"], r["next_run_at"]) for r in rows] == [("r1", "cancelled", None)]
    set_clock(datetime(2027, 3, 16, 6, 0, tzinfo=UTC))
    assert "nothing is due" in run_cli(env, "schedule", "run").stdout  # neither runs any more
    wrong = run_cli(env, "schedule", "cancel", "soon")
    assert wrong.exit_code == 1 and "not a schedule id" in wrong.output


# the beat side ----------------------------------------------------------------------------------------------


def test_beat_runs_the_scanner_and_the_wallet_check_beside_the_sweep_and_the_poller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAMPAIGN_SCHEDULE_SCAN_SECONDS", "2")
    monkeypatch.setenv("CAMPAIGN_WALLET_CHECK_SECONDS", "600")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    entries = beat_schedule(settings)
    assert {name: (entry["task"], entry["schedule"]) for name, entry in entries.items()} == {
        "recovery-sweep": ("campaign.sweep", 30.0),
        "delivery-reports": ("campaign.poll_dlr", 30.0),
        "campaign-schedules": ("campaign.scan_schedules", 2.0),
        "wallet-check": ("campaign.check_wallets", 600.0),
    }
    assert all(entry["options"]["expires"] == entry["schedule"] for entry in entries.values())
    routes = make_app(settings).conf.task_routes
    assert routes["campaign.scan_schedules"]["queue"] in QUEUES and routes["campaign.check_wallets"]["queue"] in QUEUES
    for name, value in (("CAMPAIGN_TIMEZONE", "Mars/Base"), ("CAMPAIGN_PROMOTIONAL_WINDOW", "late")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError, match=name):
            Settings(_env_file=None)  # type: ignore[call-arg]
        monkeypatch.delenv(name)


async def test_a_low_balance_is_logged_with_figures_and_no_key(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    key = sandbox.account(credits=50)
    settings = sandbox_settings(sandbox, key)
    caplog.set_level(logging.INFO, logger="engine.sending.wallet")
    async with open_provider("pixabits", settings) as pixabits, open_provider("noxitel", settings) as noxitel:
        providers = {"pixabits": pixabits, "noxitel": noxitel}
        throttles = {n: MemoryThrottle.for_account(account_id(n, key), plan_of(n, settings)) for n in providers}
        low = await check_wallets(providers, throttles, warn_below=100)
        fine = await check_wallets(providers, throttles, warn_below=10)
    assert [(r.provider, r.low, r.left) for r in low] == [("pixabits", True, 50.0), ("noxitel", True, 50.0)]
    assert not any(r.low for r in fine)
    assert "the noxitel balance is low: 50.00 credits left" in caplog.text
    assert key not in caplog.text


def test_the_beat_tasks_through_the_workers_start_a_due_campaign_once(
    workers: Workers, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.admin("accounts", {"api_key": "sandbox", "plan": "starter"})
    campaign_id = plan_campaign(workers.engine, tmp_path, 300, first=8_100_000_000, **DRAFT)
    schedule_campaign(workers.engine, campaign_id, clock.now() + timedelta(hours=1), "Asia/Kolkata")
    assert workers.run("campaign.scan_schedules")["started"] == 0  # the workers' clock says not yet
    with workers.engine.begin() as connection:  # an hour passes
        connection.execute(
            update(C).where(C.c.id == campaign_id).values(scheduled_at=clock.now() - timedelta(seconds=1))
        )
    results = [workers.app.send_task("campaign.scan_schedules") for _ in range(2)]
    assert sum(result.get(timeout=60)["started"] for result in results) == 1
    workers.wait_for(lambda: state_of(workers.engine, campaign_id) == "completed", what="the campaign to be sent")
    accepted = sandbox.endpoint("POST /api/v2/sms")["recipients"]
    assert len(accepted) == 300 and set(accepted.values()) == {1}
    left = workers.run("campaign.check_wallets")
    assert set(left) == {"pixabits", "noxitel"} and all(value > 0 for value in left.values())
