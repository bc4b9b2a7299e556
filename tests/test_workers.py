"""Campaigns through real Celery workers on Redis: every recipient exactly once, whatever fails."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from engine.campaigns.lifecycle import start, state_of, status
from engine.sandbox.outcomes import fate, rcs_capable
from engine.store import models
from tests.fixtures.campaigns import phones, plan_campaign
from tests.fixtures.celery import LEASE_SECONDS, Workers
from tests.fixtures.cli import EXAMPLE, SEND
from tests.fixtures.cli import campaign as campaign_command
from tests.fixtures.sandbox import SANDBOX, Sandbox, settled_counts

B, M, C = models.Batch.__table__, models.Message.__table__, models.Campaign.__table__
_first_number = iter(range(7_000_000_000, 8_000_000_000, 1_000_000))
#: RCS through Noxitel with a personal SMS fallback, which the engine sends to devices without RCS.
RCS_WITH_FALLBACK = {
    "channel": "rcs",
    "message": "Hi #name#, sale on",
    "agent_id": "42",
    "fallback_message": "Order #order#: sale on at ACME",
}


@pytest.fixture
def fresh(sandbox: Sandbox) -> Sandbox:
    """The sandbox reset for this test, its default account on the workers' plan."""
    sandbox.admin("accounts", {"api_key": "sandbox", "plan": "starter"})
    return sandbox


def campaign(workers: Workers, tmp_path: Path, count: int, **options: Any) -> tuple[int, list[str]]:
    """A draft campaign (`plan_campaign`'s, not spread over days) to `count` numbers no other test of the session
    uses; its id and its numbers."""
    first = next(_first_number)
    campaign_id = plan_campaign(
        workers.engine, tmp_path, count, first=first, name="Asha", start=False, spread=False, **options
    )
    return campaign_id, phones(count, first)


def launch(workers: Workers, campaign_id: int) -> None:
    """What `campaign send` and `campaign resume` do with workers: running in the database, then the bells."""
    start(workers.engine, campaign_id)
    workers.run("campaign.start_campaign", campaign_id)


def sent_all(workers: Workers, campaign_id: int) -> bool:
    return state_of(workers.engine, campaign_id) in ("completed", "paused", "failed")


def test_a_100k_campaign_through_two_workers_reaches_everyone_once(
    workers: Workers, fresh: Sandbox, tmp_path: Path
) -> None:
    campaign_id, _ = campaign(workers, tmp_path, 100_000)
    launch(workers, campaign_id)
    workers.wait_for(lambda: sent_all(workers, campaign_id), what="the campaign to be sent")
    final = status(workers.engine, campaign_id)
    assert (final.state, final.counts) == ("completed", {"submitted": 100_000})
    accepted = fresh.recipients("POST /api/v2/sms")
    assert len(accepted) == 100_000 and set(accepted.values()) == {1}
    with workers.engine.connect() as connection:
        missing_ids = connection.execute(
            select(func.count()).where(M.c.campaign_id == campaign_id, M.c.provider_message_id.is_(None))
        ).scalar_one()
    assert missing_ids == 0


def test_the_same_task_twice_and_raced_by_two_workers_sends_once(
    workers: Workers, fresh: Sandbox, tmp_path: Path
) -> None:
    campaign_id, numbers = campaign(workers, tmp_path, 500)
    start(workers.engine, campaign_id)
    with workers.engine.connect() as connection:
        batch_id = connection.execute(select(B.c.id).where(B.c.campaign_id == campaign_id)).scalar_one()
    results = [workers.app.send_task("campaign.send_batch", args=(batch_id,), queue="send.noxitel") for _ in range(4)]
    outcomes = sorted(result.get(timeout=60) for result in results)
    assert sum(": skipped, nothing sent" in outcome for outcome in outcomes) == 3, outcomes
    assert sum("500 SMS to noxitel submitted in" in outcome for outcome in outcomes) == 1, outcomes
    assert fresh.recipients("POST /api/v2/sms") == {n: 1 for n in numbers}


def test_a_killed_worker_loses_nothing_and_sends_nothing_twice(
    workers: Workers, fresh: Sandbox, tmp_path: Path
) -> None:
    campaign_id, _ = campaign(workers, tmp_path, 3_000, batch_size=500)
    fresh.configure(latency_ms=1_500)  # every call takes long enough to be caught in the middle
    launch(workers, campaign_id)

    def sending() -> bool:
        with workers.engine.connect() as connection:
            return bool(
                connection.execute(
                    select(func.count()).where(B.c.campaign_id == campaign_id, B.c.state == "sending")
                ).scalar_one()
            )

    workers.wait_for(sending, what="a batch in flight")
    with workers.engine.connect() as connection:  # the pool process that holds it
        holder = (
            connection.execute(select(B.c.claimed_by).where(B.c.campaign_id == campaign_id, B.c.state == "sending"))
            .scalars()
            .first()
        )
    os.kill(int(holder.rsplit(":", 1)[1]), signal.SIGKILL)
    fresh.configure(latency_ms=0)

    def leases_expired_and_swept() -> bool:
        workers.run("campaign.sweep")
        return sent_all(workers, campaign_id)

    workers.wait_for(leases_expired_and_swept, timeout=60 + LEASE_SECONDS, what="the campaign to finish")
    final = status(workers.engine, campaign_id)
    accepted = fresh.recipients("POST /api/v2/sms")
    assert set(accepted.values()) <= {1}
    assert final.counts.get("planned", 0) == 0
    assert final.counts.get("ambiguous", 0) >= 1  # the killed worker's batch is flagged, not lost or re-sent
    assert sum(final.counts.values()) == 3_000
    with workers.engine.connect() as connection:
        rows = connection.execute(select(M.c.address, M.c.status).where(M.c.campaign_id == campaign_id)).all()
    for address, state in rows:  # each recipient is either known to be sent or flagged as uncertain
        assert state in ("submitted", "ambiguous")
        if state == "submitted":
            assert accepted.get(address) == 1


def test_a_throttled_account_gets_no_429_across_two_workers(workers: Workers, fresh: Sandbox, tmp_path: Path) -> None:
    campaign_id, numbers = campaign(workers, tmp_path, 90, provider="pixabits", channel="rcs")
    launch(workers, campaign_id)
    workers.wait_for(lambda: sent_all(workers, campaign_id), what="the campaign to be sent")
    stats = fresh.endpoint("POST /v1/rcs/send")
    assert stats["rate_limited"] == 0
    assert stats["statuses"] == {"200": 90}
    assert stats["max_rate_1s"] <= 10 + 50  # the Starter plan's rate plus its burst
    assert fresh.recipients("POST /v1/rcs/send") == {n: 1 for n in numbers}


def test_a_storm_of_faults_and_a_402_pause_then_resume(workers: Workers, fresh: Sandbox, tmp_path: Path) -> None:
    campaign_id, numbers = campaign(workers, tmp_path, 2_000, batch_size=200)
    fresh.faults("/api/v2/sms", "429", "503", "drop", "500", "429")
    fresh.admin("accounts", {"api_key": "sandbox", "plan": "starter", "credits": 1_000})
    launch(workers, campaign_id)
    workers.wait_for(lambda: sent_all(workers, campaign_id), what="the campaign to stop")
    paused = status(workers.engine, campaign_id)
    assert paused.state == "paused" and "Insufficient credits" in (paused.reason or "")
    fresh.admin("accounts", {"api_key": "sandbox", "plan": "starter", "credits": 1_000_000})
    launch(workers, campaign_id)
    workers.wait_for(lambda: sent_all(workers, campaign_id), what="the resumed campaign")
    final = status(workers.engine, campaign_id)
    assert final.state == "completed"
    # The provider took every recipient once; the batch whose answer was dropped is flagged, not re-sent.
    assert fresh.recipients("POST /api/v2/sms") == {n: 1 for n in numbers}
    assert final.counts == {"submitted": 1_800, "ambiguous": 200}


def test_a_flushed_broker_costs_nothing(workers: Workers, fresh: Sandbox, tmp_path: Path) -> None:
    campaign_id, numbers = campaign(workers, tmp_path, 2_000, batch_size=100)
    fresh.configure(latency_ms=300)
    launch(workers, campaign_id)
    workers.wait_for(
        lambda: status(workers.engine, campaign_id).counts.get("submitted", 0) >= 200, what="the first batches"
    )
    assert workers.flush_broker() > 0
    fresh.configure(latency_ms=0)
    workers.wait_for(
        lambda: (workers.run("campaign.sweep") is not None) and sent_all(workers, campaign_id),
        what="the sweep to finish the campaign",
    )
    assert status(workers.engine, campaign_id).counts == {"submitted": 2_000}
    assert fresh.recipients("POST /api/v2/sms") == {n: 1 for n in numbers}


def test_rcs_with_a_personal_fallback_through_the_workers(workers: Workers, fresh: Sandbox, tmp_path: Path) -> None:
    """Capability answers are cached in Redis; capable devices get RCS, the others the SMS, none both."""
    campaign_id, numbers = campaign(workers, tmp_path, 60, **RCS_WITH_FALLBACK)
    launch(workers, campaign_id)
    workers.wait_for(lambda: sent_all(workers, campaign_id), what="the campaign to be sent")
    assert status(workers.engine, campaign_id).counts == {"submitted": 60}
    capable = {n for n in numbers if rcs_capable(SANDBOX, n[1:])}
    assert set(fresh.recipients("POST /api/v2/rcs/message")) == capable
    assert set(fresh.recipients("POST /api/v2/sms")) == set(numbers) - capable
    with workers.engine.connect() as connection:
        used = dict(
            connection.execute(select(M.c.address, M.c.channel_used).where(M.c.campaign_id == campaign_id)).all()
        )
    assert {a for a, c in used.items() if c == "rcs"} == capable


def test_rcs_that_fails_after_sending_gets_its_sms_through_the_beat_poller(
    workers: Workers, fresh: Sandbox, tmp_path: Path
) -> None:
    """The poller reads the RCS failures, queues their SMS fallback and rings for it; each number gets one SMS."""
    campaign_id, numbers = campaign(workers, tmp_path, 40, **RCS_WITH_FALLBACK)
    launch(workers, campaign_id)
    workers.wait_for(lambda: sent_all(workers, campaign_id), what="the campaign to be sent")
    fresh.advance_clock(5)
    assert workers.run("campaign.poll_dlr")["fallbacks"] > 0
    capable = {n for n in numbers if rcs_capable(SANDBOX, n[1:])}
    reached = {n for n in capable if fate(SANDBOX, n[1:]) == "delivered"}
    workers.wait_for(
        lambda: (
            len(fresh.recipients("POST /api/v2/sms")) == len(numbers) - len(reached) and sent_all(workers, campaign_id)
        ),
        what="the fallback SMS to be sent",
    )
    assert set(fresh.recipients("POST /api/v2/sms")) == set(numbers) - reached
    assert set(fresh.recipients("POST /api/v2/sms").values()) == {1}
    assert workers.run("campaign.poll_dlr")["fallbacks"] == 0  # once


def test_campaign_send_with_a_broker_queues_and_waits(workers: Workers, fresh: Sandbox, tmp_path: Path) -> None:
    done = campaign_command(
        workers.env, "send", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"), "--yes", "--wait", "--json"
    )
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert (result["state"], result["submitted"]) == ("completed", 20)
    assert "queued for the workers" in done.stderr
    assert len(fresh.recipients("POST /api/v2/sms")) == 20


def test_the_beat_poller_task_brings_in_the_reports(workers: Workers, fresh: Sandbox, tmp_path: Path) -> None:
    campaign_id, numbers = campaign(workers, tmp_path, 200)
    launch(workers, campaign_id)
    workers.wait_for(lambda: sent_all(workers, campaign_id), what="the campaign to be sent")
    fresh.advance_clock(5)
    assert workers.run("campaign.poll_dlr")["reports"] >= 200
    assert status(workers.engine, campaign_id).counts == settled_counts(numbers)
    assert status(workers.engine, campaign_id).batches == {"settled": 1}
