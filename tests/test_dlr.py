"""Delivery reports: provider words to canonical statuses, applied forward only, in one statement per page."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import zstandard
from sqlalchemy import Engine, select, update

from engine import clock
from engine.campaigns.lifecycle import status
from engine.local import local_sender, send_campaign, wait_for_reports
from engine.providers.base import Channel, DeliveryReport
from engine.reports import statuses as dlr
from engine.reports.poller import poll_due
from engine.sandbox.config import SandboxConfig
from engine.settings import Settings
from engine.store import models
from tests.fixtures.campaigns import mark_sent, phones, plan_campaign, statuses
from tests.fixtures.sandbox import Sandbox, settled

P = models.DeliveryPage.__table__
M, B = models.Message.__table__, models.Batch.__table__
#: A personal message with no DLT template: the operator refuses every India-bound SMS of it.
UNREGISTERED = {"message": "Hi #name#", "dlt_on": ()}


def report(
    status: str,
    to: str = "+919000000000",
    provider: str = "noxitel",
    channel: Channel = Channel.SMS,
    detail: str | None = None,
) -> DeliveryReport:
    return DeliveryReport(provider=provider, channel=channel, to=to, status=status, detail=detail)


@pytest.mark.parametrize(
    ("provider", "channel", "word", "detail", "expected"),
    [
        ("noxitel", Channel.SMS, "Handset Delivered", "DELIVRD", "delivered"),
        ("noxitel", Channel.SMS, "Undelivered", "UNDELIV", "undeliverable"),
        ("noxitel", Channel.SMS, "Failed", "UNDELIV", "undeliverable"),  # the operator's word says more
        ("noxitel", Channel.SMS, "Failed", None, "failed"),
        ("noxitel", Channel.SMS, "Expired", "EXPIRED", "expired"),
        ("noxitel", Channel.SMS, "Something new", "REJECTD", "rejected"),
        ("noxitel", Channel.SMS, "DLT Template Not Registered", "REJECTD", "rejected"),
        ("noxitel", Channel.SMS, "Pending", None, None),
        ("noxitel", Channel.RCS, "read", None, "read"),
        ("noxitel", Channel.RCS, "incompatible", None, "undeliverable"),
        ("noxitel", Channel.WHATSAPP, "delivered", None, "delivered"),
        ("pixabits", Channel.SMS, "sms.message.delivered", None, "delivered"),
        ("pixabits", Channel.SMS, "sms.message.failed", "UNDELIV", "undeliverable"),
        ("pixabits", Channel.SMS, "sms.message.failed", "NETWORK_ERROR", "failed"),
        ("pixabits", Channel.SMS, "sms.message.failed", "EXPIRED", "expired"),
        ("pixabits", Channel.SMS, "sms.message.failed", "DLT_TEMPLATE_NOT_REGISTERED", "rejected"),
        ("pixabits", Channel.EMAIL, "email.bounced", "hard", "undeliverable"),
        ("pixabits", Channel.EMAIL, "email.bounced", "soft", "failed"),
        ("pixabits", Channel.EMAIL, "email.opened", None, "read"),
        ("pixabits", Channel.RCS, "rcs.fallback.triggered", None, "fallback"),
        ("pixabits", Channel.WHATSAPP, "wa.message.read", None, "read"),
        ("noxitel", Channel.SMS, "Queued at the moon", "MOON", "unknown"),
        ("pixabits", Channel.SMS, "sms.message.teleported", None, "unknown"),
    ],
)
def test_provider_words_map_to_canonical_statuses(
    provider: str, channel: Channel, word: str, detail: str | None, expected: str | None
) -> None:
    assert dlr.canonical(report(word, provider=provider, channel=channel, detail=detail)) == expected


def test_incompatible_is_a_fallback_when_the_provider_sends_the_sms() -> None:
    assert dlr.canonical(report("incompatible", channel=Channel.RCS), provider_fallback=True) == "fallback"


@pytest.fixture
def campaign(database: Engine, tmp_path: Path) -> int:
    """A saved campaign of three numbers, submitted (as after sending)."""
    campaign_id = plan_campaign(database, tmp_path, 3, message="Sale today", dlt_on=(), start=False)
    mark_sent(database, campaign_id)
    return campaign_id


def apply(engine: Engine, reports: list[DeliveryReport], campaign_id: int) -> Counter[str]:
    """A page of reports about the campaign's one batch, as a poll returns it."""
    with engine.connect() as connection:
        batch_id = connection.execute(select(B.c.id).where(B.c.campaign_id == campaign_id)).scalar_one()
    return dlr.apply(engine, reports, campaign_id, batch_id)


def test_statuses_only_move_forward(database: Engine, campaign: int) -> None:
    one, two, three = "+919000000000", "+919000000001", "+919000000002"
    apply(database, [report("Handset Delivered", one), report("Undelivered", two)], campaign)
    apply(database, [report("sent", one, channel=Channel.SMS)], campaign)  # late and lower: ignored
    apply(database, [report("Handset Delivered", two)], campaign)  # a final status is final
    assert statuses(database) == {one: "delivered", two: "undeliverable", three: "submitted"}
    apply(database, [report("read", one, channel=Channel.RCS)], campaign)  # read outranks delivered
    apply(database, [report("failed", one, channel=Channel.RCS)], campaign)
    assert statuses(database)[one] == "read"


def test_one_page_holds_duplicates_and_out_of_order_reports(database: Engine, campaign: int) -> None:
    one, two = "+919000000000", "+919000000001"
    seen = apply(
        database,
        [
            report("Handset Delivered", one),
            report("Pending", two),
            report("sent", one),
            report("Handset Delivered", one),
            report("Moonlit", two),
        ],
        campaign,
    )
    assert seen == {"delivered": 2, "sent": 1, "unknown": 1}
    assert statuses(database)[one] == "delivered" and statuses(database)[two] == "submitted"


def test_a_report_polled_again_is_kept_once(database: Engine, campaign: int) -> None:
    one, two = "+919000000000", "+919000000001"
    apply(database, [report("sent", one), report("sent", two)], campaign)
    apply(database, [report("sent", one), report("sent", two)], campaign)  # nothing new: nothing kept
    apply(database, [report("sent", one), report("Handset Delivered", two, detail="DELIVRD")], campaign)
    with database.connect() as connection:
        pages = connection.execute(select(P.c.reports, P.c.events).order_by(P.c.id)).all()
    assert [count for count, _ in pages] == [2, 1]
    latest = orjson.loads(zstandard.decompress(pages[1].events))
    assert (latest["to"], latest["status"], latest["canonical"]) == ([two], ["Handset Delivered"], ["delivered"])
    assert statuses(database) == {one: "sent", two: "delivered", "+919000000002": "submitted"}


def test_any_report_tells_an_ambiguous_message_was_sent(database: Engine, campaign: int) -> None:
    one, two = "+919000000000", "+919000000001"
    with database.begin() as connection:
        connection.execute(update(M).values(status="ambiguous"))
    apply(database, [report("Pending", one), report("Moonlit", two)], campaign)
    assert statuses(database) == {one: "submitted", two: "submitted", "+919000000002": "ambiguous"}


def test_a_batch_settles_when_every_message_is_final(database: Engine, campaign: int) -> None:
    numbers = phones(3)
    apply(database, [report("Handset Delivered", n) for n in numbers[:2]], campaign)
    with database.connect() as connection:
        assert connection.execute(select(B.c.state)).scalar_one() == "submitted"
    apply(database, [report("Expired", numbers[2], detail="EXPIRED")], campaign)
    with database.connect() as connection:
        assert connection.execute(select(B.c.state)).scalar_one() == "settled"
        assert connection.execute(select(M.c.error).where(M.c.address == numbers[2])).scalar_one() == "EXPIRED"


async def test_waiting_ends_for_batches_no_report_will_come_for(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    """An ambiguous batch, and a batch the provider no longer knows, do not hold the wait."""
    campaign_id = plan_campaign(database, tmp_path, 6, "noxitel", "sms", **UNREGISTERED)
    sandbox.faults("/api/v2/sms", "drop")
    async with local_sender(database, settings, "noxitel") as sender:
        assert (await send_campaign(database, sender, campaign_id)).counts == {"ambiguous": 6}
        await wait_for_reports(database, sender, "noxitel", campaign_id, settings)
        other = plan_campaign(database, tmp_path, 6, "noxitel", "sms", **UNREGISTERED)
        await send_campaign(database, sender, other)
        sandbox.reset()  # the provider forgets the batch
        await wait_for_reports(database, sender, "noxitel", other, settings)
    assert status(database, other).counts == {"submitted": 6}


async def test_pixabits_whatsapp_failures_push_nothing_and_the_quiet_ends_the_wait(
    database: Engine, sandbox: Sandbox, tmp_path: Path
) -> None:
    settings = Settings()  # the embedded sandbox, whose pushes come into this process
    campaign_id = plan_campaign(database, tmp_path, 40, "pixabits", "whatsapp", **UNREGISTERED)
    async with local_sender(database, settings, "pixabits", receive=True) as sender:
        await send_campaign(database, sender, campaign_id)
        await wait_for_reports(database, sender, "pixabits", campaign_id, settings, quiet=1.0)
    counts = status(database, campaign_id).counts
    delivered = sum(settled(n, SandboxConfig()) == "delivered" for n in phones(40))
    assert counts.get("delivered") == delivered and counts.get("submitted", 0) == 40 - delivered


async def test_the_poller_settles_batches_then_expires_what_never_reports(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    first = plan_campaign(database, tmp_path, 30, "noxitel", "sms", **UNREGISTERED)
    async with local_sender(database, settings, "noxitel") as sender:
        await send_campaign(database, sender, first)
        sandbox.advance_clock(5)
        done = await poll_due(database, sender.providers, sender.throttles, timedelta(hours=72))
        assert (done.polled, done.reports, done.expired) == (1, 30, 0)
        assert status(database, first).batches == {"settled": 1}
        assert (await poll_due(database, sender.providers, sender.throttles, timedelta(hours=72))).polled == 0
        sandbox.configure(dlr_delay=86_400)  # the next campaign's reports never settle
        second = plan_campaign(database, tmp_path, 10, "noxitel", "sms", **UNREGISTERED)
        await send_campaign(database, sender, second)
        later = clock.now() + timedelta(hours=73)
        old = await poll_due(database, sender.providers, sender.throttles, timedelta(hours=72), moment=later)
    assert old.expired == 10
    assert status(database, second).counts == {"expired": 10}
    assert status(database, second).batches == {"settled": 1}
    # No DLT template was given: the operator refuses every India-bound SMS.
    assert status(database, first).counts == {"rejected": 30}
