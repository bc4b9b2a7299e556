"""Send windows: a batch due outside its campaign's hours waits for them, never fails; promotional SMS to India
keep to 09:00-21:00 IST by default."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, select

from engine.campaigns.lifecycle import start, status
from engine.campaigns.schedules import scan
from engine.local import local_sender, send_campaign
from engine.planning.dlt import DltTemplate
from engine.planning.planner import PlanContext, PlanRequest, build_plan, save_plan
from engine.planning.pricing import PriceTable
from engine.sending.dispatch import Sender
from engine.settings import Settings
from engine.store import models
from engine.windows import SendWindow, WindowError, as_utc
from tests.fixtures.campaigns import write_contacts
from tests.fixtures.cli import run_cli
from tests.fixtures.clock import IST, ist
from tests.fixtures.sandbox import Sandbox

pytestmark = pytest.mark.sandbox_settings(noxitel_rate=1000)
B, C = models.Batch.__table__, models.Campaign.__table__
MESSAGE = "Dear #name#, our sale is live till #order#. -ACME"
PROMOTIONAL = DltTemplate(
    "1207161234567890199",
    "1201159876543210987",
    "ACMEIN",
    "Promotional",
    "Dear {#var#}, our sale is live till {#var#}. -ACME",
)
SERVICE = DltTemplate(
    "1207161234567890199",
    "1201159876543210987",
    "ACMEIN",
    "Service Implicit",
    "Dear {#var#}, our sale is live till {#var#}. -ACME",
)
REGULATED = SendWindow(time(9), time(21), "Asia/Kolkata")
#: The people of these tests' contacts files: Asha each time, the sale on till Sunday (+91 91000 00000 on).
PEOPLE = {"start": 9_100_000_000, "name": "Asha", "order": "Sunday"}


def plan(path: Path, window: SendWindow | None = None, template: DltTemplate = PROMOTIONAL, **options: object):  # type: ignore[no-untyped-def]
    request = PlanRequest(
        contacts=path,
        channel="sms",
        provider="noxitel",
        message=MESSAGE,
        sender="ACMEIN",
        dlt_template=template,
        window=window,
        **options,
    )  # type: ignore[arg-type]
    return build_plan(request, PlanContext(prices=PriceTable.load(), promotional_window=REGULATED))


# the window itself -------------------------------------------------------------------------------------------


def test_a_window_opens_and_closes_on_the_wall_clock_of_its_zone() -> None:
    window = SendWindow.parse("9-21", "Asia/Kolkata")
    assert window == REGULATED and str(window) == "09:00-21:00 Asia/Kolkata"
    assert window.is_open(datetime(2026, 11, 24, 3, 30, tzinfo=UTC))  # 09:00 IST
    assert not window.is_open(datetime(2026, 11, 24, 15, 30, tzinfo=UTC))  # 21:00 IST
    assert window.next_open(datetime(2026, 11, 24, 15, 30, tzinfo=UTC)) == datetime(2026, 11, 25, 3, 30, tzinfo=UTC)
    assert window.next_open(datetime(2026, 11, 24, 1, 0, tzinfo=UTC)) == datetime(2026, 11, 24, 3, 30, tzinfo=UTC)
    inside = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    assert window.next_open(inside) == inside
    night = SendWindow.parse("22:00-06:00", "Europe/London")  # past midnight, and through a clock change
    assert night.is_open(datetime(2026, 3, 29, 4, 0, tzinfo=UTC)) and not night.is_open(
        datetime(2026, 3, 29, 5, 0, tzinfo=UTC)
    )
    assert night.next_open(datetime(2026, 3, 29, 12, 0, tzinfo=UTC)) == datetime(2026, 3, 29, 21, 0, tzinfo=UTC)
    for written, why in (("9:00", "cannot be read"), ("25-3", "hours go from 00 to 23"), ("9-9", "same time")):
        with pytest.raises(WindowError, match=why):
            SendWindow.parse(written, "Asia/Kolkata")
    with pytest.raises(WindowError, match="not a time zone"):
        SendWindow.parse("9-21", "India/Mumbai")


# what the plan says -------------------------------------------------------------------------------------------


def test_promotional_sms_to_india_keep_to_the_regulated_hours_by_default(tmp_path: Path) -> None:
    path = write_contacts(tmp_path / "contacts-5.csv", 5, **PEOPLE)
    promotional = plan(path)
    assert promotional.window == REGULATED
    assert promotional.summary.as_json()["window"] == {
        "start": "09:00",
        "end": "21:00",
        "tz": "Asia/Kolkata",
        "why": "promotional SMS to India",
    }
    assert REGULATED.is_open(datetime.fromisoformat(promotional.summary.as_json()["starts_at"]))
    service = plan(path, template=SERVICE)  # OTPs, orders: any hour
    assert service.window is None and service.summary.timing.window is None
    narrower = plan(path, window=SendWindow.parse("10:00-20:00", "Asia/Kolkata"))
    assert narrower.window == SendWindow(time(10), time(20), "Asia/Kolkata") and not narrower.summary.warnings
    wider = plan(path, window=SendWindow.parse("08:00-22:00", "Asia/Kolkata"))
    assert wider.window == SendWindow(time(8), time(22), "Asia/Kolkata")
    assert any("only 09:00-21:00 Asia/Kolkata" in w for w in wider.summary.warnings)


def test_each_day_of_a_spread_campaign_starts_when_its_quota_and_window_allow(tmp_path: Path) -> None:
    request = PlanRequest(
        contacts=write_contacts(tmp_path / "contacts-1500.csv", 1_500, **PEOPLE),
        channel="sms",
        provider="pixabits",
        message=MESSAGE,
        sender="ACMEIN",
        dlt_template=PROMOTIONAL,
    )
    spread = build_plan(request, PlanContext(prices=PriceTable.load(), daily_quota=1_000, promotional_window=REGULATED))
    first, second = (datetime.fromisoformat(day["starts_at"]) for day in spread.summary.as_json()["days"])
    assert second.astimezone(IST).time() == time(9) and second.date() > first.date()


# sending ----------------------------------------------------------------------------------------------------


@pytest.fixture
async def noxitel(database: Engine, settings: Settings) -> AsyncIterator[Sender]:
    async with local_sender(database, settings, "noxitel") as sender:
        yield sender


def saved(engine: Engine, tmp_path: Path, count: int, batch_size: int | None = None) -> int:
    path = write_contacts(tmp_path / f"contacts-{count}.csv", count, **PEOPLE)
    campaign_id = save_plan(engine, plan(path, batch_size=batch_size))
    start(engine, campaign_id)
    return campaign_id


async def test_a_batch_due_outside_its_window_waits_and_goes_when_it_opens(
    database: Engine,
    noxitel: Sender,
    settings: Settings,
    sandbox: Sandbox,
    tmp_path: Path,
    set_clock: Callable[[datetime], None],
) -> None:
    set_clock(ist(1, 22, 30))
    campaign_id = saved(database, tmp_path, 30, batch_size=10)
    waiting = await send_campaign(database, noxitel, campaign_id)
    opens = ist(2, 9)
    assert (waiting.state, waiting.counts) == ("waiting", {"planned": 30})
    assert "send window 09:00-21:00 Asia/Kolkata" in (waiting.reason or "")
    assert f"{opens:%Y-%m-%d} 09:00 IST" in (waiting.reason or "")
    assert sandbox.endpoint("POST /api/v2/sms") == {}
    with database.connect() as connection:
        states = connection.execute(select(B.c.state, B.c.not_before, B.c.attempts)).all()
    assert {s.state for s in states} == {"planned"} and {s.attempts for s in states} == {0}  # none failed for it
    assert any(s.not_before is not None and as_utc(s.not_before) == opens for s in states)

    set_clock(opens - timedelta(minutes=1))
    assert scan(database, settings).woken == []  # not before the window opens
    set_clock(opens + timedelta(seconds=30))
    assert scan(database, settings).woken == [campaign_id]
    assert scan(database, settings).woken == []  # once
    done = await send_campaign(database, noxitel, campaign_id)
    assert (done.state, done.counts) == ("completed", {"submitted": 30})
    assert set(sandbox.endpoint("POST /api/v2/sms")["recipients"].values()) == {1}


async def test_a_window_that_closes_mid_campaign_puts_off_the_rest(
    database: Engine,
    noxitel: Sender,
    settings: Settings,
    sandbox: Sandbox,
    tmp_path: Path,
    set_clock: Callable[[datetime], None],
) -> None:
    set_clock(ist(1, 20, 59))
    campaign_id = saved(database, tmp_path, 40, batch_size=10)
    closes = ist(1, 21, 0)
    first = await send_campaign(
        database, noxitel, campaign_id, concurrency=1, progress=lambda done: set_clock(closes)
    )  # 21:00 once the first batch is through
    assert (first.state, first.counts) == ("waiting", {"submitted": 10, "planned": 30})
    set_clock(ist(2, 9, 0))
    assert scan(database, settings).woken == [campaign_id]
    rest = await send_campaign(database, noxitel, campaign_id)
    assert (rest.state, rest.counts) == ("completed", {"submitted": 40})
    accepted = sandbox.endpoint("POST /api/v2/sms")["recipients"]
    assert len(accepted) == 40 and set(accepted.values()) == {1}
    assert status(database, campaign_id).reason is None


def test_campaign_plan_json_shows_the_window_and_the_start(tmp_path: Path) -> None:
    path = write_contacts(tmp_path / "contacts-3.csv", 3, **PEOPLE)
    env = {"CAMPAIGN_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}
    options = [
        "plan",
        str(path),
        "--provider",
        "noxitel",
        "--sender",
        "ACMEIN",
        "--message",
        MESSAGE,
        "--skip-balance",
        "--window",
        "10-11",
        "--window-tz",
        "Europe/Paris",
    ]
    result = run_cli(env, *options, "--json")
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert summary["window"] == {"start": "10:00", "end": "11:00", "tz": "Europe/Paris", "why": None}
    assert SendWindow.parse("10-11", "Europe/Paris").is_open(datetime.fromisoformat(summary["starts_at"]))
    assert "sends           10:00-11:00 Europe/Paris; starts" in run_cli(env, *options).stdout
    refused = run_cli(env, "plan", str(path), "--message", MESSAGE, "--window", "soon")
    assert refused.exit_code == 1 and "write it as 09:00-21:00" in refused.output
