"""Reconciling delivery reports: kept once, parked until their message is known, applied forward only;
the engine's SMS fallback for RCS sent once; temporary failures retried, refusals never."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import zstandard
from sqlalchemy import Engine, func, select, update

from engine import clock
from engine.campaigns.lifecycle import resend_ambiguous, retry_failed, status
from engine.local import local_sender, send_campaign, send_due
from engine.planning.dlt import DltTemplate
from engine.planning.pricing import PriceTable
from engine.planning.suppressions import add
from engine.providers.base import Channel, DeliveryReport
from engine.reports import statuses as dlr
from engine.reports.poller import campaign_pages
from engine.reports.pushed import match
from engine.reports.rounds import ReportTimes, expire_old, report_round
from engine.sandbox.noxitel_api import WA_PRICE
from engine.sandbox.outcomes import fate, rcs_capable
from engine.sending import fallback
from engine.sending.recovery import due_batches
from engine.settings import Settings
from engine.store import models
from engine.store.states import UNREPORTED
from tests.fixtures.campaigns import mark_sent, phones, plan_campaign, statuses
from tests.fixtures.clock import clock_ahead
from tests.fixtures.sandbox import SANDBOX, Sandbox, settled

pytestmark = pytest.mark.sandbox_settings(noxitel_rate=1000, rcs_fallback="engine")
DLT = DltTemplate("1207161234567890123", "1201159876543210987", "ACMEIN", None, "Hi {#var#}, your sale is on. -ACME")
#: The campaign of these tests: a sale, its DLT template on the SMS (and on an RCS campaign's SMS fallback).
SALE_TEXT = "Hi #name#, your sale is on. -ACME"
SALE = {"message": SALE_TEXT, "dlt_template": DLT, "dlt_on": ("sms", "rcs")}
RCS_SALE = {**SALE, "agent_id": "42", "fallback_message": SALE_TEXT}
E, M, B = models.DeliveryEvent.__table__, models.Message.__table__, models.Batch.__table__
P = models.DeliveryPage.__table__
MAX_AGE = timedelta(hours=72)
#: Report rounds that queue no fallback: the tests queue them themselves.
REPORTS = ReportTimes(MAX_AGE, None)


def pushed(status: str, to: str, detail: str | None = None, channel: Channel = Channel.SMS) -> DeliveryReport:
    return DeliveryReport(
        "pixabits", channel, to, status, detail, message_id=f"msg-{to}", raw={"event": status, "data": {"to": to}}
    )


def stored(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(E)).scalar_one())


async def test_pushed_reports_are_kept_once_parked_until_their_message_is_known_and_applied_forward(
    database: Engine, settings: Settings, tmp_path: Path
) -> None:
    first, second, third = phones(3)
    campaign_id = plan_campaign(database, tmp_path, 3, "pixabits", **SALE)
    # The provider is faster than our commit: a report for a message not yet sent is parked, not lost.
    assert dlr.store_pushed(database, [pushed("sms.message.delivered", first)]) == 1
    early = dlr.apply_pending(database, MAX_AGE)
    assert (early.parked, sum(early.counts.values())) == (1, 0)
    assert statuses(database, campaign_id)[first] == "planned"
    async with local_sender(database, settings, "pixabits") as sender:
        await send_campaign(database, sender, campaign_id)
    matched = dlr.apply_pending(database, MAX_AGE)
    assert (matched.parked, matched.counts, matched.campaigns) == (0, Counter(delivered=1), {campaign_id})
    # The same push again stores nothing; a late lower one and a failure after delivery change nothing.
    assert dlr.store_pushed(database, [pushed("sms.message.delivered", first)]) == 0
    assert (
        dlr.store_pushed(
            database,
            [
                pushed("sms.message.failed", first, "UNDELIV"),
                pushed("sms.message.failed", second, "UNDELIV"),
                pushed("sms.message.teleported", third),
            ],
        )
        == 3
    )
    later = dlr.apply_pending(database, MAX_AGE)
    assert later.counts == Counter(undeliverable=2, unknown=1)
    assert statuses(database, campaign_id) == {first: "delivered", second: "undeliverable", third: "submitted"}
    with database.connect() as connection:
        events = connection.execute(
            select(E.c.status, E.c.provider_status, E.c.message_id, E.c.processed, E.c.raw)
        ).all()
        message_ids = set(connection.execute(select(M.c.id)).scalars())
    assert len(events) == 4 and all(e.processed and e.message_id in message_ids for e in events)
    assert {e.provider_status for e in events if e.status is None} == {"sms.message.teleported"}  # kept raw
    assert all('"to"' in e.raw for e in events)


async def test_a_report_by_number_goes_to_the_campaign_awaiting_it_never_to_an_unsent_message(
    database: Engine, settings: Settings, tmp_path: Path
) -> None:
    """Pixabits pushes name no batch, so the number is the key. A second campaign to the same numbers gets its
    own reports (they went to the first one's oldest open message), and a message of the first one left in
    doubt (its batch may never have reached the provider) is not marked delivered by them."""
    first, second, _ = phones(3)
    older = plan_campaign(database, tmp_path, 3, "pixabits", **SALE)
    async with local_sender(database, settings, "pixabits") as sender:
        await send_campaign(database, sender, older)
    with database.begin() as connection:  # the first one's message to `second`: in doubt, as after a lost answer
        connection.execute(update(M).where(M.c.campaign_id == older, M.c.address == second).values(status="ambiguous"))
    newer = plan_campaign(database, tmp_path, 3, "pixabits", **SALE)
    async with local_sender(database, settings, "pixabits") as sender:
        await send_campaign(database, sender, newer)
    dlr.store_pushed(database, [pushed("sms.message.delivered", first), pushed("sms.message.delivered", second)])
    dlr.apply_pending(database, MAX_AGE)
    assert statuses(database, newer)[first] == statuses(database, newer)[second] == "delivered"
    assert (statuses(database, older)[first], statuses(database, older)[second]) == ("submitted", "ambiguous")
    assert (status(database, newer).matched_by_number, status(database, older).matched_by_number) == (2, 0)


async def test_a_batch_in_doubt_settles_once_reports_vouch_for_every_message(
    database: Engine, settings: Settings, tmp_path: Path
) -> None:
    """The answer to a call was lost (the batch and its messages `ambiguous`), but a report came for each of
    them: the provider had them all, so the batch settles and nothing is left to re-send."""
    numbers = phones(3)
    campaign_id = plan_campaign(database, tmp_path, 3, "pixabits", **SALE)
    async with local_sender(database, settings, "pixabits") as sender:
        await send_campaign(database, sender, campaign_id)
    with database.begin() as connection:
        connection.execute(update(B).where(B.c.campaign_id == campaign_id).values(state="ambiguous"))
        connection.execute(update(M).where(M.c.campaign_id == campaign_id).values(status="ambiguous"))
    dlr.store_pushed(database, [pushed("sms.message.delivered", number) for number in numbers[:2]])
    dlr.apply_pending(database, MAX_AGE)
    assert status(database, campaign_id).batches == {"ambiguous": 1}  # one still in doubt
    dlr.store_pushed(database, [pushed("sms.message.delivered", numbers[2])])
    dlr.apply_pending(database, MAX_AGE)
    assert status(database, campaign_id).batches == {"settled": 1}
    assert set(statuses(database, campaign_id).values()) == {"delivered"}


async def test_a_parked_report_that_never_matches_is_given_up_after_the_maximum_age(database: Engine) -> None:
    dlr.store_pushed(database, [pushed("sms.message.delivered", "+15550000000")])
    assert dlr.apply_pending(database, MAX_AGE).parked == 1
    with clock_ahead(MAX_AGE.total_seconds() + 60):
        gone = dlr.apply_pending(database, MAX_AGE)
    assert (gone.abandoned, gone.parked, stored(database)) == (1, 0, 1)


async def test_polled_pages_are_stored_once_and_settle_to_the_sandbox_fates(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 25, "noxitel", **SALE)
    async with local_sender(database, settings, "noxitel") as sender:
        await send_campaign(database, sender, campaign_id)
        sandbox.advance_clock(5)
        provider, throttle = sender.providers["noxitel"], sender.throttles["noxitel"]
        first = await report_round(database, REPORTS, campaign_pages(database, provider, throttle, campaign_id, set()))
        assert first.reports == 25
        # nothing new the second time: stored once
        await report_round(database, REPORTS, campaign_pages(database, provider, throttle, campaign_id, set()))
    assert statuses(database, campaign_id) == {n: settled(n) for n in phones(25)}
    with database.connect() as connection:
        pages = connection.execute(select(P.c.reports, P.c.events)).all()
    assert [count for count, _ in pages] == [25]  # the second poll returned nothing new
    kept = orjson.loads(zstandard.decompress(pages[0].events))
    assert sorted(kept["to"]) == phones(25) and all(row["dlr"]["status"] for row in kept["raw"])
    assert stored(database) == 0
    assert status(database, campaign_id).batches == {"settled": 1}


async def test_rcs_that_does_not_arrive_gets_its_sms_fallback_once_and_never_after_delivery(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    numbers = phones(40)
    campaign_id = plan_campaign(database, tmp_path, 40, "noxitel", "rcs", **RCS_SALE)
    async with local_sender(database, settings, "noxitel") as sender:
        await send_campaign(database, sender, campaign_id)  # devices without RCS: SMS at once
        sandbox.advance_clock(5)
        provider, throttle = sender.providers["noxitel"], sender.throttles["noxitel"]
        await report_round(database, REPORTS, campaign_pages(database, provider, throttle, campaign_id, set()))
        moved = fallback.due(database, timedelta(minutes=10), MAX_AGE, [campaign_id])
        await send_due(database, sender, campaign_id)
        assert fallback.due(database, timedelta(minutes=10), MAX_AGE, [campaign_id]) == 0  # once
        with clock_ahead(3600):  # long past the fallback wait: nothing else qualifies
            assert fallback.due(database, timedelta(minutes=10), MAX_AGE, [campaign_id]) == 0
    capable = {n for n in numbers if rcs_capable(SANDBOX, n[1:])}
    reached = {n for n in capable if fate(SANDBOX, n[1:]) == "delivered"}
    assert moved == len(capable - reached)
    rcs = Counter(sandbox.endpoint("POST /api/v2/rcs/message")["recipients"])
    sms = Counter(sandbox.endpoint("POST /api/v2/sms")["recipients"])
    assert rcs == Counter({n: 1 for n in capable})
    expected_sms = set(numbers) - reached
    assert set(sms) == expected_sms and set(sms.values()) == {1}
    current = status(database, campaign_id)
    assert current.fallbacks == len(expected_sms)
    with database.connect() as connection:
        used = dict(connection.execute(select(M.c.address, M.c.channel_used)).all())
    assert {n for n, channel in used.items() if channel == "sms"} == expected_sms


async def test_rcs_with_no_delivery_within_the_wait_falls_back(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.configure(dlr_delay=86_400, rcs_share=1.0)  # every device takes RCS; no report comes today
    campaign_id = plan_campaign(database, tmp_path, 5, "noxitel", "rcs", **RCS_SALE)
    async with local_sender(database, settings, "noxitel") as sender:
        await send_campaign(database, sender, campaign_id)
        assert fallback.due(database, timedelta(minutes=10), MAX_AGE, [campaign_id]) == 0  # not yet
        with clock_ahead(11 * 60):
            assert fallback.due(database, timedelta(minutes=10), MAX_AGE, [campaign_id]) == 5
        await send_due(database, sender, campaign_id)
    assert len(sandbox.endpoint("POST /api/v2/sms")["recipients"]) == 5
    assert status(database, campaign_id).counts == {"submitted": 5}


async def test_retry_failed_resends_temporary_failures_only(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    numbers = phones(6)
    campaign_id = plan_campaign(database, tmp_path, 6, "noxitel", **SALE)
    async with local_sender(database, settings, "noxitel") as sender:
        await send_campaign(database, sender, campaign_id)
        words = ["Expired", "Failed", "Undelivered", "DLT Template Not Registered", "Handset Delivered", "DND"]
        with database.connect() as connection:
            batch_id = connection.execute(select(B.c.id).where(B.c.campaign_id == campaign_id)).scalar_one()
        dlr.apply(
            database,
            [DeliveryReport("noxitel", Channel.SMS, n, w) for n, w in zip(numbers, words, strict=True)],
            campaign_id,
            batch_id,
        )
        assert statuses(database, campaign_id) == dict(
            zip(numbers, ["expired", "failed", "undeliverable", "rejected", "delivered", "rejected"], strict=True)
        )
        assert retry_failed(database, campaign_id) == 2
        assert retry_failed(database, campaign_id) == 0  # moved once: now planned, not failed
        outcome = await send_campaign(database, sender, campaign_id)
    assert outcome.state == "completed"
    sent = sandbox.endpoint("POST /api/v2/sms")["recipients"]
    assert sorted(sent.values()) == [1, 1, 1, 1, 2, 2]
    assert {n for n, c in sent.items() if c == 2} == set(numbers[:2])
    with database.connect() as connection:
        kinds = Counter(connection.execute(select(B.c.kind).where(B.c.campaign_id == campaign_id)).scalars())
    assert kinds == Counter(send=1, retry=1)


async def test_status_shows_the_cost_the_provider_reported_beside_the_estimate(
    database: Engine, settings: Settings, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 4, "noxitel", "whatsapp", "Your sale is on. -ACME")
    assert status(database, campaign_id).reported_cost is None
    async with local_sender(database, settings, "noxitel") as sender:
        await send_campaign(database, sender, campaign_id)
    current = status(database, campaign_id)
    assert current.reported_cost == pytest.approx(4 * WA_PRICE)  # Noxitel's `total_cost`
    assert current.as_dict()["reported_cost"] == current.reported_cost
    assert current.estimated_cost > 0


async def test_a_report_about_the_rcs_attempt_never_touches_its_sms_fallback(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.configure(rcs_share=1.0, dlr_delay=86_400)
    number = phones(1)[0]
    campaign_id = plan_campaign(database, tmp_path, 1, "noxitel", "rcs", **RCS_SALE)
    async with local_sender(database, settings, "noxitel") as sender:
        await send_campaign(database, sender, campaign_id)
        # A push about the RCS message is matched to it, then the message moves to its SMS fallback.
        dlr.store_pushed(database, [DeliveryReport("noxitel", Channel.RCS, number, "failed")])
        with database.begin() as connection:
            match(connection, clock.now() - MAX_AGE)
        with clock_ahead(11 * 60):
            assert fallback.due(database, timedelta(minutes=10), MAX_AGE, [campaign_id]) == 1
        await send_due(database, sender, campaign_id)
    applied = dlr.apply_pending(database, MAX_AGE)
    assert applied.events == 1  # taken from the queue, kept, and not applied to the SMS
    with database.connect() as connection:
        row = connection.execute(select(M.c.status, M.c.channel_used)).one()
    assert tuple(row) == ("submitted", "sms")


def test_concurrent_fallback_rounds_move_each_message_once(database: Engine, tmp_path: Path) -> None:
    campaign_id = plan_campaign(database, tmp_path, 30, "noxitel", "rcs", **RCS_SALE)
    mark_sent(database, campaign_id, clock.now(), status="undeliverable")  # every RCS message refused by its device
    with ThreadPoolExecutor(4) as pool:
        moved = list(pool.map(lambda _: fallback.due(database, timedelta(minutes=10), MAX_AGE), range(4)))
    assert sum(moved) == 30
    with database.connect() as connection:
        kinds = Counter(connection.execute(select(B.c.kind)).scalars())
        sizes, units, cost = connection.execute(
            select(func.sum(B.c.size), func.sum(B.c.segments), func.sum(B.c.estimated_cost)).where(
                B.c.kind == "fallback"
            )
        ).one()
    assert kinds["fallback"] >= 1 and sizes == 30
    # The SMS is estimated like the planner does: one GSM-7 segment each at the Noxitel SMS price.
    assert units == 30 and cost == pytest.approx(30 * PriceTable.load().price("noxitel", "sms", "gsm7").amount)
    assert statuses(database, campaign_id) == {n: "planned" for n in phones(30)}


def test_retry_leaves_what_the_engine_gave_up_on_and_numbers_that_opted_out(database: Engine, tmp_path: Path) -> None:
    numbers = phones(3)
    campaign_id = plan_campaign(database, tmp_path, 3, "noxitel", **SALE)
    with database.begin() as connection:
        connection.execute(update(B).values(state="settled"))
        connection.execute(update(M).values(status="expired", error="EXPIRED"))
        connection.execute(update(M).where(M.c.address == numbers[1]).values(error=UNREPORTED))
    add(database, [numbers[2]], reason="opt-out reply", source="test", region="IN")
    assert retry_failed(database, campaign_id) == 1
    assert statuses(database, campaign_id) == {numbers[0]: "planned", numbers[1]: "expired", numbers[2]: "suppressed"}


async def test_the_receiver_round_applies_more_than_a_page(
    database: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    numbers = phones(25)
    campaign_id = plan_campaign(database, tmp_path, 25, "pixabits", **SALE)
    async with local_sender(database, settings, "pixabits") as sender:
        await send_campaign(database, sender, campaign_id)
    dlr.store_pushed(database, [pushed("sms.message.delivered", n) for n in numbers])
    monkeypatch.setattr(dlr, "PAGE", 10)
    done = await report_round(database, ReportTimes.of(settings), drain=True)  # the receiver's round
    assert done.pushed == 25
    assert set(statuses(database, campaign_id).values()) == {"delivered"}


def test_resend_ambiguous_reopens_a_batch_the_poller_settled(database: Engine, tmp_path: Path) -> None:
    """The poller settles an old batch but leaves its ambiguous messages so; re-sending them must reopen it."""
    campaign_id = plan_campaign(database, tmp_path, 2, "noxitel", **SALE)
    mark_sent(database, campaign_id, clock.now(), status="ambiguous")
    expire_old(database, clock.now() + timedelta(seconds=1))
    assert (status(database, campaign_id).batches, status(database, campaign_id).counts) == (
        {"settled": 1},
        {"ambiguous": 2},
    )
    assert resend_ambiguous(database, campaign_id) == 2
    assert len(due_batches(database, campaign_id=campaign_id)) == 1
