"""Decisions that must hold when a campaign is sent, whenever it was planned: an opt-out is honoured at send
time, a pause or cancel stops per-recipient calls within about a second, and an error nothing foresaw leaves
the campaign in a state `resume` and `cancel` act on."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from engine.campaigns.lifecycle import cancel, pause, resend_ambiguous, start, state_of, status
from engine.local import local_sender, send_campaign
from engine.planning import suppressions
from engine.sending.recovery import sweep
from engine.settings import Settings
from engine.store import models
from tests.fixtures.campaigns import MESSAGE, phones, plan_campaign, statuses
from tests.fixtures.celery import WORKER_PLAN, Workers
from tests.fixtures.clock import clock_ahead
from tests.fixtures.polling import eventually, eventually_async
from tests.fixtures.sandbox import Sandbox

B, M, C = models.BATCHES, models.MESSAGES, models.CAMPAIGNS
#: Per-recipient calls slow enough (and a batch long enough) for a pause to land mid-batch.
LATENCY_MS = 50
RECIPIENTS = 200


def opt_out(database: Engine, numbers: list[str]) -> None:
    suppressions.add(database, numbers, reason="opt-out", source="test", region="IN")


def submitted(database: Engine, campaign_id: int) -> int:
    with database.connect() as connection:
        return int(
            connection.execute(
                select(func.count()).where(M.c.campaign_id == campaign_id, M.c.status == "submitted")
            ).scalar_one()
        )


# An opt-out is honoured at send time -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "provider, channel, message",
    [("noxitel", "sms", MESSAGE), ("pixabits", "whatsapp", "Hi")],
    ids=["noxitel-sms", "pixabits-whatsapp"],
)
async def test_a_number_suppressed_after_planning_is_not_sent(
    provider: str, channel: str, message: str, database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 30, provider, channel, message, batch_size=10, start=False)
    numbers = phones(30)
    opt_out(database, [numbers[3], numbers[17]])  # after `plan --save`, before it goes
    start(database, campaign_id)
    async with local_sender(database, settings, provider) as sender:
        outcome = await send_campaign(database, sender, campaign_id)
    assert (outcome.state, outcome.counts) == ("completed", {"submitted": 28, "suppressed": 2})
    sent = set(sandbox.recipients("POST /api/v2/sms")) | set(sandbox.recipients("POST /v1/wa/messages"))
    assert sent == set(numbers) - {numbers[3], numbers[17]}
    assert status(database, campaign_id).suppressed_at_send == 2
    assert statuses(database, campaign_id)[numbers[17]] == "suppressed"


async def test_resend_ambiguous_honours_an_opt_out_made_since(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 10)
    sandbox.faults("/api/v2/sms", "drop")
    async with local_sender(database, settings, "noxitel") as sender:
        assert (await send_campaign(database, sender, campaign_id)).counts == {"ambiguous": 10}
        opt_out(database, phones(10)[:4])
        assert resend_ambiguous(database, campaign_id) == 10
        again = await send_campaign(database, sender, campaign_id)
    assert again.counts == {"submitted": 6, "suppressed": 4}
    accepted = sandbox.recipients("POST /api/v2/sms")
    assert sorted(accepted.values()) == [1] * 4 + [2] * 6  # the opted-out four only got the first, lost, call


# Pause pauses, cancel cancels ------------------------------------------------------------------------------


async def _stop_mid_batch(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path, stop: str
) -> tuple[int, int, int]:
    """Send a WhatsApp campaign (one recipient per call, one batch) and `stop` it ("pause", "cancel" or "interrupt",
    as Ctrl-C does) once a few have gone; returns the campaign, how many had gone when it was asked,
    and what `cancel` reported."""
    campaign_id = plan_campaign(database, tmp_path, RECIPIENTS, "pixabits", "whatsapp", "Hi #name#")
    sandbox.configure(latency_ms=LATENCY_MS)
    reported = 0
    async with local_sender(database, settings, "pixabits") as sender:
        interrupt = asyncio.Event()
        sending = asyncio.create_task(send_campaign(database, sender, campaign_id, stop=interrupt))
        seen = await eventually_async(lambda: submitted(database, campaign_id), lambda n: n >= 5, "a few sent")
        if stop == "pause":
            pause(database, campaign_id)
        elif stop == "interrupt":
            interrupt.set()
        else:
            reported = cancel(database, campaign_id)
        await sending
    return campaign_id, seen, reported


@pytest.mark.parametrize("stop", ["pause", "interrupt"])
async def test_a_pause_stops_per_recipient_calls_and_resume_sends_the_rest_once(
    stop: str, database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id, seen, _ = await _stop_mid_batch(database, settings, sandbox, tmp_path, stop)
    paused = status(database, campaign_id)
    went = paused.counts["submitted"]
    assert paused.state == "paused" and paused.counts == {"submitted": went, "planned": RECIPIENTS - went}
    assert paused.batches == {"planned": 1}  # the batch goes back, with exactly what it had not sent
    # About a second's calls at most went after the pause (20 a second here), and status says how many.
    assert paused.stop_requested_at is not None
    assert paused.sent_after_stop <= went - seen and went - seen < 40
    start(database, campaign_id)
    async with local_sender(database, settings, "pixabits") as sender:
        resumed = await send_campaign(database, sender, campaign_id)
    assert (resumed.state, resumed.counts) == ("completed", {"submitted": RECIPIENTS})
    assert sandbox.recipients("POST /v1/wa/messages") == {n: 1 for n in phones(RECIPIENTS)}
    assert status(database, campaign_id).sent_after_stop == 0  # a resumed campaign is no longer stopped


async def test_a_cancel_stops_per_recipient_calls_and_cancels_what_it_reports(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id, seen, reported = await _stop_mid_batch(database, settings, sandbox, tmp_path, "cancel")
    final = status(database, campaign_id)
    went = final.counts["submitted"]
    assert final.state == "cancelled" and final.counts == {"submitted": went, "cancelled": RECIPIENTS - went}
    assert reported == RECIPIENTS - went  # every message it reported as never going, and no other
    assert went - seen < 40 and final.sent_after_stop <= went - seen
    assert final.batches == {"submitted": 1}  # some of it went: their reports are still gathered
    went_to = {address for address, now in statuses(database).items() if now == "submitted"}
    assert set(sandbox.recipients("POST /v1/wa/messages")) == went_to


def test_a_pause_reaches_the_per_recipient_calls_of_celery_workers(
    workers: Workers, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Two workers, each with a batch of one-recipient calls in hand: both stop within about a second."""
    sandbox.admin("accounts", {"api_key": "sandbox", "plan": WORKER_PLAN})
    sandbox.configure(latency_ms=LATENCY_MS)
    engine, count, first = workers.engine, 100, 6_900_000_000
    campaign_id = plan_campaign(
        engine,
        tmp_path,
        count,
        "pixabits",
        "whatsapp",
        "Hi #name#",
        first=first,
        start=False,
        spread=False,
        batch_size=25,
    )
    start(engine, campaign_id)
    workers.run("campaign.start_campaign", campaign_id)
    seen = eventually(lambda: submitted(engine, campaign_id), lambda n: n >= 5, "a few sent", timeout=60)
    pause(engine, campaign_id)
    workers.wait_for(lambda: "sending" not in status(engine, campaign_id).batches, what="the senders to stop")
    paused = status(engine, campaign_id)
    went = paused.counts["submitted"]
    assert paused.state == "paused" and paused.counts == {"submitted": went, "planned": count - went}
    assert went - seen < 30 and paused.sent_after_stop <= went - seen  # 10 calls a second on this plan
    start(engine, campaign_id)
    workers.run("campaign.start_campaign", campaign_id)
    workers.wait_for(lambda: state_of(engine, campaign_id) == "completed", what="the rest to go")
    accepted = sandbox.recipients("POST /v1/wa/messages")
    assert {n: accepted.get(n) for n in phones(count, first)} == {n: 1 for n in phones(count, first)}


async def test_a_pause_during_a_long_hold_makes_no_bulk_call(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A bulk call already with the provider finishes; one still waiting on the throttle is not made."""
    campaign_id = plan_campaign(database, tmp_path, 10)
    async with local_sender(database, settings, "noxitel") as sender:
        await sender.throttles["noxitel"].hold(3)  # the provider asked every sender of the account to wait
        sending = asyncio.create_task(send_campaign(database, sender, campaign_id))
        await eventually_async(lambda: status(database, campaign_id).batches, lambda b: b == {"sending": 1}, "claim")
        pause(database, campaign_id)
        outcome = await sending
    assert (outcome.state, outcome.counts) == ("paused", {"planned": 10})
    assert sandbox.endpoint("POST /api/v2/sms") == {}


# An unexpected error leaves a campaign that resume and cancel act on ---------------------------------------


def _set_agent_id(database: Engine, campaign_id: int, agent_id: str | None) -> None:
    """Store an agent id on the campaign, as a plan that did not check it would (the send path takes numbers)."""
    with database.begin() as connection:
        connection.execute(update(C).where(C.c.id == campaign_id).values(agent_id=agent_id))


async def test_an_unexpected_error_fails_the_campaign_and_resume_sends_it(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 12, "pixabits", "rcs", "Hi #name#")
    _set_agent_id(database, campaign_id, "acme_rcs_agent")
    async with local_sender(database, settings, "pixabits") as sender:
        outcome = await send_campaign(database, sender, campaign_id)
        assert (outcome.state, outcome.counts) == ("failed", {"planned": 12})
        assert "ValueError" in (outcome.reason or "") and f"campaign resume {campaign_id}" in (outcome.reason or "")
        assert status(database, campaign_id).batches == {"planned": 1}
        _set_agent_id(database, campaign_id, None)
        start(database, campaign_id)
        resumed = await send_campaign(database, sender, campaign_id)
    assert (resumed.state, resumed.counts) == ("completed", {"submitted": 12})
    assert sandbox.recipients("POST /v1/rcs/send") == {n: 1 for n in phones(12)}


async def test_cancel_after_an_unexpected_error_cancels_every_unsent_message(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 12, "pixabits", "rcs", "Hi #name#")
    _set_agent_id(database, campaign_id, "acme_rcs_agent")
    async with local_sender(database, settings, "pixabits") as sender:
        assert (await send_campaign(database, sender, campaign_id)).state == "failed"
    assert cancel(database, campaign_id) == 12
    final = status(database, campaign_id)
    assert (final.state, final.counts, final.batches) == ("cancelled", {"cancelled": 12}, {"cancelled": 1})
    assert sandbox.endpoint("POST /v1/rcs/send") == {}


async def test_cancel_of_a_batch_left_sending_by_a_crash_spares_only_what_may_have_left(
    database: Engine, tmp_path: Path
) -> None:
    """A per-recipient batch's `planned` messages never left (each is claimed before its call); its `queued`
    one, and a bulk batch in hand, may be with the provider: they are left to the sweep, which flags them."""
    one_by_one = plan_campaign(database, tmp_path, 5, "pixabits", "whatsapp", "Hi #name#")
    bulk = plan_campaign(database, tmp_path, 5, first=9_100_000_000)
    lease = models.utcnow() + timedelta(minutes=5)
    with database.begin() as connection:  # both senders died mid-call, their leases not yet run out
        connection.execute(update(B).values(state="sending", claimed_by="dead", claim_expires_at=lease))
        first = connection.execute(select(func.min(M.c.id)).where(M.c.campaign_id == one_by_one)).scalar_one()
        connection.execute(update(M).where(M.c.id == first).values(status="queued"))
    assert cancel(database, one_by_one) == 4
    assert cancel(database, bulk) == 0
    with clock_ahead(600):
        sweep(database)
    crashed, in_hand = status(database, one_by_one), status(database, bulk)
    assert (crashed.counts, crashed.batches) == ({"ambiguous": 1, "cancelled": 4}, {"submitted": 1})
    assert (in_hand.counts, in_hand.batches) == ({"ambiguous": 5}, {"ambiguous": 1})


async def test_an_unexpected_error_after_a_request_left_leaves_only_that_call_in_doubt(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No sandbox fault makes a client fail in a way it does not sort, so the fault is put in the client: the
    provider takes the second call, and the answer is lost to an error nothing foresaw."""
    campaign_id = plan_campaign(database, tmp_path, 30, batch_size=10)
    async with local_sender(database, settings, "noxitel") as sender:
        provider = sender.providers["noxitel"]
        send_sms, calls = provider.send_sms, []

        async def fails_after_the_second_request(batch: Any) -> Any:
            submission = await send_sms(batch)
            calls.append(batch)
            if len(calls) == 2:
                raise KeyError(batch.messages[0].to)
            return submission

        monkeypatch.setattr(provider, "send_sms", fails_after_the_second_request)
        outcome = await send_campaign(database, sender, campaign_id, concurrency=1)
        assert (outcome.state, outcome.counts) == ("failed", {"submitted": 10, "ambiguous": 10, "planned": 10})
        assert "KeyError" in (outcome.reason or "") and phones(30)[10] not in (outcome.reason or "")
        start(database, campaign_id)
        resumed = await send_campaign(database, sender, campaign_id, concurrency=1)
    assert (resumed.state, resumed.counts) == ("completed", {"submitted": 20, "ambiguous": 10})
    assert sandbox.recipients("POST /api/v2/sms") == {n: 1 for n in phones(30)}  # the doubtful ten not re-sent
