"""Sending planned campaigns in local mode: each recipient exactly once, whatever the provider does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from sqlalchemy import Engine, select, update

from engine import clock
from engine.campaigns.lifecycle import cancel, resend_ambiguous, start, status
from engine.local import local_sender, send_campaign
from engine.planning.planner import PlanContext, PlanRequest, build_plan, save_plan
from engine.planning.pricing import PriceTable
from engine.providers.errors import InsufficientCredits
from engine.sandbox.outcomes import rcs_capable
from engine.sending.dispatch import RetryPolicy, Sender
from engine.sending.recovery import sweep
from engine.settings import Settings
from engine.store import models
from tests.fixtures.campaigns import phones, plan_campaign
from tests.fixtures.clock import clock_ahead
from tests.fixtures.polling import eventually_async
from tests.fixtures.sandbox import SANDBOX, Sandbox, sandbox_settings

pytestmark = pytest.mark.sandbox_settings(noxitel_rate=1000)
B, M, C = models.Batch.__table__, models.Message.__table__, models.Campaign.__table__


@pytest.fixture
async def noxitel(database: Engine, settings: Settings) -> AsyncIterator[Sender]:
    async with local_sender(database, settings, "noxitel") as sender:
        sender.retry = RetryPolicy(attempts=3, base=0.01)
        yield sender


async def test_every_recipient_is_sent_once_with_provider_ids(
    database: Engine, noxitel: Sender, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 1_000, batch_size=300)
    outcome = await send_campaign(database, noxitel, campaign_id)
    assert outcome.state == "completed"
    assert outcome.counts == {"submitted": 1_000}
    stats = sandbox.endpoint("POST /api/v2/sms")
    assert stats["accepted_requests"] == 4
    assert stats["recipients"] == {n: 1 for n in phones(1_000)}
    body = sandbox.last_body("POST /api/v2/sms")
    assert body["message"] == "Hi #v1#, your order #v2# has shipped. -ACME"
    assert body["contacts"][0]["parameters"] == {"v1": "Asha900", "v2": "A900"}
    with database.connect() as connection:
        rows = connection.execute(select(M.c.address, M.c.provider_message_id, M.c.channel_used)).all()
        batches = connection.execute(select(B.c.state, B.c.provider_batch_id)).all()
    assert all(r.provider_message_id and r.channel_used == "sms" for r in rows)
    assert len({r.provider_message_id for r in rows}) == 1_000
    assert {b.state for b in batches} == {"submitted"} and all(b.provider_batch_id for b in batches)


async def test_a_batch_delivered_twice_or_raced_is_sent_once(
    database: Engine, noxitel: Sender, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 50)
    with database.connect() as connection:
        batch_id = connection.execute(select(B.c.id).where(B.c.campaign_id == campaign_id)).scalar_one()
    results = await asyncio.gather(noxitel.send_batch(batch_id), noxitel.send_batch(batch_id))
    assert sorted(results) == ["skipped", "submitted"]
    assert await noxitel.send_batch(batch_id) == "skipped"
    assert sandbox.endpoint("POST /api/v2/sms")["accepted_requests"] == 1


async def test_transient_failures_are_retried_and_nothing_is_sent_twice(
    database: Engine, noxitel: Sender, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 100, batch_size=50)
    sandbox.faults("/api/v2/sms", "500", "500", "429")
    outcome = await send_campaign(database, noxitel, campaign_id, concurrency=1)
    assert outcome.counts == {"submitted": 100}
    assert sandbox.endpoint("POST /api/v2/sms")["recipients"] == {n: 1 for n in phones(100)}


async def test_retries_run_out_into_a_failed_batch_with_the_reason(
    database: Engine, noxitel: Sender, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 10)
    sandbox.faults("/api/v2/sms", "500", "500", "500")
    outcome = await send_campaign(database, noxitel, campaign_id)
    assert outcome.counts == {"failed": 10}
    with database.connect() as connection:
        batch = connection.execute(select(B.c.state, B.c.error)).one()
    assert batch.state == "failed" and "HTTP 500" in batch.error


async def test_a_lost_answer_makes_the_batch_ambiguous_not_resent(
    database: Engine, noxitel: Sender, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 60, batch_size=20)
    sandbox.faults("/api/v2/sms", "drop")
    outcome = await send_campaign(database, noxitel, campaign_id, concurrency=1)
    assert outcome.counts == {"ambiguous": 20, "submitted": 40}
    assert sandbox.endpoint("POST /api/v2/sms")["recipients"] == {n: 1 for n in phones(60)}
    assert (await send_campaign(database, noxitel, campaign_id)).counts == {"ambiguous": 20, "submitted": 40}
    # Asked to, the engine re-sends exactly the uncertain ones: the user accepts they may get it twice.
    assert resend_ambiguous(database, campaign_id) == 20
    again = await send_campaign(database, noxitel, campaign_id)
    assert (again.state, again.counts) == ("completed", {"submitted": 60})
    accepted = sandbox.endpoint("POST /api/v2/sms")["recipients"]
    assert sorted(accepted.values()).count(2) == 20 and len(accepted) == 60


async def test_no_credits_pauses_and_resume_continues_where_it_stopped(
    database: Engine, noxitel: Sender, sandbox: Sandbox, settings: Settings, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 90, batch_size=30)
    sandbox.admin("accounts", {"api_key": settings.noxitel_api_key.get_secret_value(), "credits": 45})
    outcome = await send_campaign(database, noxitel, campaign_id, concurrency=1)
    assert outcome.state == "paused" and "Insufficient credits" in (outcome.reason or "")
    assert outcome.counts == {"submitted": 30, "planned": 60}
    sandbox.admin("accounts", {"api_key": settings.noxitel_api_key.get_secret_value(), "credits": 1_000})
    start(database, campaign_id)
    resumed = await send_campaign(database, noxitel, campaign_id, concurrency=1)
    assert resumed.state == "completed" and resumed.counts == {"submitted": 90}
    assert sandbox.endpoint("POST /api/v2/sms")["recipients"] == {n: 1 for n in phones(90)}


async def test_a_wrong_key_fails_the_campaign_naming_the_setting(
    database: Engine, settings: Settings, tmp_path: Path
) -> None:
    wrong = settings.model_copy(update={"noxitel_api_key": settings.noxitel_api_key.__class__("not-a-key-123")})
    campaign_id = plan_campaign(database, tmp_path, 10)
    async with local_sender(database, wrong, "noxitel") as sender:
        outcome = await send_campaign(database, sender, campaign_id)
    assert outcome.state == "failed"
    assert "NOXITEL_API_KEY" in (outcome.reason or "") and "not-a-key-123" not in (outcome.reason or "")
    assert outcome.counts == {"planned": 10}


async def test_a_rejected_batch_fails_alone(
    database: Engine, noxitel: Sender, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 30, batch_size=10)
    sandbox.faults("/api/v2/sms", "429")  # first call waits, then goes through
    with database.begin() as connection:  # a number the provider refuses, in the second batch
        second = connection.execute(select(B.c.id).where(B.c.seq == 1)).scalar_one()
        connection.execute(update(M).where(M.c.batch_id == second, M.c.line == 13).values(address="+12"))
    outcome = await send_campaign(database, noxitel, campaign_id, concurrency=1)
    assert outcome.state == "completed"
    assert outcome.counts == {"submitted": 20, "rejected": 10}  # refused for good: not for `retry-failed`
    with database.connect() as connection:
        error = connection.execute(select(B.c.error).where(B.c.id == second)).scalar_one()
    assert "Invalid mobile number" in error


async def test_a_dead_workers_batch_becomes_ambiguous_after_its_lease(
    database: Engine, noxitel: Sender, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 20, batch_size=10)
    with database.begin() as connection:  # a worker claimed the first batch, then died
        connection.execute(
            update(B)
            .where(B.c.seq == 0)
            .values(state="sending", claimed_by="dead-worker", claim_expires_at=models.utcnow())
        )
    result = sweep(database)
    assert len(result.ambiguous_batches) == 1 and len(result.due) == 1
    outcome = await send_campaign(database, noxitel, campaign_id)
    assert outcome.counts == {"ambiguous": 10, "submitted": 10}


async def test_pixabits_rcs_claims_each_message_before_its_call(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(
        database, tmp_path, 6, provider="pixabits", channel="rcs", message="Hi #name#, sale today"
    )
    async with local_sender(database, settings, "pixabits") as sender:
        outcome = await send_campaign(database, sender, campaign_id)
    assert outcome.counts == {"submitted": 6}
    assert sandbox.endpoint("POST /v1/rcs/send")["recipients"] == {n: 1 for n in phones(6)}
    with database.connect() as connection:
        assert all(connection.execute(select(M.c.provider_message_id)).scalars())


async def test_the_starter_daily_quota_defers_the_rest_to_tomorrow(
    database: Engine, sandbox: Sandbox, tmp_path: Path
) -> None:
    key = sandbox.account(plan="starter")
    settings = sandbox_settings(sandbox, key, pixabits_plan="starter")
    campaign_id = plan_campaign(database, tmp_path, 1_500, provider="pixabits", daily_quota=1_000)
    async with local_sender(database, settings, "pixabits") as sender:
        first = await send_campaign(database, sender, campaign_id)
        assert (first.state, first.counts) == ("waiting", {"submitted": 1_000, "planned": 500})
        assert "500 messages wait until" in (first.reason or "") and f"campaign resume {campaign_id}" in first.reason
        assert sandbox.endpoint("POST /v2/sms/bulk")["rate_limited"] == 0  # the quota was never overrun
        assert (await send_campaign(database, sender, campaign_id)).counts["planned"] == 500  # not before tomorrow
        with clock_ahead(24 * 3600):
            sandbox.advance_clock(24 * 3600)
            start(database, campaign_id)
            second = await send_campaign(database, sender, campaign_id)
    assert (second.state, second.counts) == ("completed", {"submitted": 1_500})
    assert sandbox.endpoint("POST /v2/sms/bulk")["recipients"] == {n: 1 for n in phones(1_500)}


@pytest.mark.parametrize("fallback", ["Sale today at ACME", "Hi #name#, sale today at ACME"])
async def test_rcs_goes_to_capable_devices_and_sms_to_the_rest_never_both(
    fallback: str, database: Engine, noxitel: Sender, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A shared fallback text is left to the provider's smsFallback; a personal one is routed by the engine."""
    campaign_id = plan_campaign(
        database,
        tmp_path,
        40,
        channel="rcs",
        message="Hi #name#, our sale is on",
        agent_id="42",
        fallback_message=fallback,
    )
    outcome = await send_campaign(database, noxitel, campaign_id)
    assert outcome.counts == {"submitted": 40}
    capable = {n for n in phones(40) if rcs_capable(SANDBOX, n[1:])}
    rcs = set(sandbox.recipients("POST /api/v2/rcs/message"))
    sms = set(sandbox.recipients("POST /api/v2/sms")) | set(sandbox.recipients("SMS-FALLBACK /api/v2/rcs/message"))
    assert sms == set(phones(40)) - capable
    assert rcs & set(sandbox.recipients("POST /api/v2/sms")) == set()
    assert rcs == (capable if "#" in fallback else set(phones(40)))
    with database.connect() as connection:
        used = dict(connection.execute(select(M.c.address, M.c.channel_used)).all())
    if "#" in fallback:  # the engine knows which channel each recipient got
        assert {a for a, c in used.items() if c == "sms"} == sms
        assert sandbox.last_body("POST /api/v2/sms")["message"] == "Hi #v1#, sale today at ACME"
        assert sandbox.endpoint("GET /api/v2/rcs/capability")["requests"] == 40
    else:
        assert sandbox.last_body("POST /api/v2/rcs/message")["smsFallback"]["message"] == fallback


async def test_resend_ambiguous_skips_messages_a_report_vouches_for(
    database: Engine, noxitel: Sender, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 10)
    sandbox.faults("/api/v2/sms", "drop")
    assert (await send_campaign(database, noxitel, campaign_id)).counts == {"ambiguous": 10}
    events = models.DeliveryEvent.__table__
    with database.begin() as connection:
        vouched = connection.execute(select(M.c.id).order_by(M.c.id).limit(3)).scalars().all()
        connection.execute(
            events.insert(),
            [
                {
                    "fingerprint": m,
                    "message_id": m,
                    "provider": "noxitel",
                    "channel": "sms",
                    "status": "delivered",
                    "provider_status": "Handset Delivered",
                    "received_at": clock.now(),
                    "processed": True,
                }
                for m in vouched
            ],
        )
    assert resend_ambiguous(database, campaign_id) == 7
    again = await send_campaign(database, noxitel, campaign_id)
    assert again.counts == {"submitted": 10}
    accepted = sandbox.endpoint("POST /api/v2/sms")["recipients"]
    assert sorted(accepted.values()) == [1, 1, 1] + [2] * 7


async def test_one_lost_answer_in_a_per_recipient_batch_leaves_only_that_message_in_doubt(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 5, provider="pixabits", channel="rcs", message="Hi #name#")
    sandbox.faults("/v1/rcs/send", "drop")  # the first call is accepted but its answer is lost
    async with local_sender(database, settings, "pixabits") as sender:
        outcome = await send_campaign(database, sender, campaign_id)
    assert (outcome.state, outcome.counts) == ("completed", {"ambiguous": 1, "submitted": 4})
    assert sandbox.recipients("POST /v1/rcs/send") == {n: 1 for n in phones(5)}


async def test_cancel_during_a_send_keeps_what_the_provider_took(
    database: Engine, noxitel: Sender, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 60, batch_size=20)
    sandbox.configure(latency_ms=800)
    sending = asyncio.create_task(send_campaign(database, noxitel, campaign_id, concurrency=1))

    def in_flight() -> bool:
        with database.connect() as connection:
            return connection.execute(select(B.c.id).where(B.c.state == "sending")).first() is not None

    await eventually_async(in_flight, bool, "the first batch to be with the provider", timeout=60)
    cancel(database, campaign_id)  # while the first batch is with the provider
    outcome = await sending
    assert outcome.state == "cancelled"
    assert outcome.counts == {"submitted": 20, "cancelled": 40}
    assert sandbox.endpoint("POST /api/v2/sms")["recipients"] == {n: 1 for n in phones(20)}


async def test_the_sweep_never_overwrites_a_batch_that_was_recorded(
    database: Engine, noxitel: Sender, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 10)
    assert (await send_campaign(database, noxitel, campaign_id)).counts == {"submitted": 10}
    with database.begin() as connection:  # a stale lease left on a batch that is already submitted
        connection.execute(update(B).values(claim_expires_at=clock.now()))
    assert sweep(database).ambiguous_batches == []
    with database.connect() as connection:
        assert connection.execute(select(B.c.state)).scalar_one() == "submitted"


async def test_news_after_the_sweep_corrects_the_batch(database: Engine, noxitel: Sender, tmp_path: Path) -> None:
    """A worker that froze past its lease and then hears 402 knows nothing was sent: the batch goes back."""
    campaign_id = plan_campaign(database, tmp_path, 10)
    with database.connect() as connection:
        batch = connection.execute(select(B)).one()
    assert noxitel._claim(batch.id)
    with database.begin() as connection:
        connection.execute(update(B).values(claim_expires_at=clock.now()))
    assert sweep(database).ambiguous_batches == [batch.id]
    noxitel._failed_call(batch, InsufficientCredits("noxitel", "Insufficient credits", 402))
    current = status(database, campaign_id)
    assert (current.state, current.counts, current.batches) == ("paused", {"planned": 10}, {"planned": 1})


async def test_a_swept_recipient_of_a_per_call_batch_can_be_resent(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 4, provider="pixabits", channel="rcs", message="Hi #name#")
    with database.begin() as connection:  # a worker claimed the batch and died during its first call
        connection.execute(update(B).values(state="sending", claimed_by="dead", claim_expires_at=clock.now()))
        first = connection.execute(select(M.c.id).order_by(M.c.id)).scalars().first()
        connection.execute(update(M).where(M.c.id == first).values(status="queued"))
    assert sweep(database).resumed_batches != []
    async with local_sender(database, settings, "pixabits") as sender:
        assert (await send_campaign(database, sender, campaign_id)).counts == {"ambiguous": 1, "submitted": 3}
        assert resend_ambiguous(database, campaign_id) == 1
        final = await send_campaign(database, sender, campaign_id)
    assert (final.state, final.counts) == ("completed", {"submitted": 4})
    assert sandbox.recipients("POST /v1/rcs/send") == {n: 1 for n in phones(4)}


async def test_a_long_hold_defers_the_batch_instead_of_parking_the_sender(
    database: Engine, noxitel: Sender, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(database, tmp_path, 10)
    await noxitel.throttles["noxitel"].hold(3_600)  # the provider asked every sender to wait an hour
    outcome = await send_campaign(database, noxitel, campaign_id)
    assert outcome.state == "waiting" and outcome.counts == {"planned": 10}
    assert sandbox.endpoint("POST /api/v2/sms") == {}


async def test_email_and_whatsapp_go_through_the_same_path(
    database: Engine, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "emails.csv"
    pa_csv.write_csv(
        pa.table({"email": [f"user{i}@example.com" for i in range(25)], "name": [f"Asha{i}" for i in range(25)]}),
        str(path),
    )
    request = PlanRequest(
        contacts=path,
        channel="email",
        provider="pixabits",
        message="<p>Hi #name#</p>",
        subject="News for #name#",
        sender="news@acme.example",
        batch_size=10,
    )
    email_id = save_plan(database, build_plan(request, PlanContext(prices=PriceTable.load())))
    start(database, email_id)
    whatsapp_id = plan_campaign(database, tmp_path, 3, provider="pixabits", channel="whatsapp", message="Hi #name#")
    async with local_sender(database, settings, "pixabits") as sender:
        assert (await send_campaign(database, sender, email_id)).counts == {"submitted": 25}
        assert (await send_campaign(database, sender, whatsapp_id)).counts == {"submitted": 3}
    assert sandbox.endpoint("POST /v2/email/send/bulk")["accepted_requests"] == 3
    assert sandbox.last_body("POST /v2/email/send/bulk")["messages"][0] == {
        "to": "user20@example.com",
        "subject": "News for Asha20",
        "html": "<p>Hi Asha20</p>",
    }
    assert sandbox.recipients("POST /v1/wa/messages") == {n: 1 for n in phones(3)}
