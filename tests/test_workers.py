"""Campaigns through real Celery workers on Redis: every recipient exactly once, whatever fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from sqlalchemy import func, select

from engine.campaigns.lifecycle import start, state_of, status
from engine.planning.dlt import DltTemplate
from engine.planning.planner import PlanContext, PlanRequest, build_plan, save_plan
from engine.planning.pricing import PriceTable
from engine.sandbox.config import SandboxConfig
from engine.sandbox.outcomes import fate, rcs_capable
from engine.store import models
from tests.fixtures.celery import LEASE_SECONDS, Workers
from tests.fixtures.sandbox import SANDBOX_SEED, Sandbox

SANDBOX = SandboxConfig(seed=SANDBOX_SEED)

DLT = DltTemplate(
    "1207161234567890123", "1201159876543210987", "ACMEIN", None, "Hi {#var#}, your order {#var#} has shipped. -ACME"
)
MESSAGE = "Hi #name#, your order #order# has shipped. -ACME"
B, M, C = models.Batch.__table__, models.Message.__table__, models.Campaign.__table__
_first_number = iter(range(7_000_000_000, 8_000_000_000, 1_000_000))


@pytest.fixture
def fresh(sandbox: Sandbox) -> Sandbox:
    """The sandbox reset for this test, its default account on the workers' plan."""
    sandbox.admin("accounts", {"api_key": "sandbox", "plan": "starter"})
    return sandbox


def campaign(
    workers: Workers,
    tmp_path: Path,
    count: int,
    provider: str = "noxitel",
    channel: str = "sms",
    batch_size: int | None = None,
    message: str = MESSAGE,
    **options: object,
) -> tuple[int, list[str]]:
    """Plan a campaign to `count` numbers no other test of the session uses; returns its id and numbers."""
    first = next(_first_number)
    numbers = (first + np.arange(count)).astype(str)
    path = tmp_path / "contacts.csv"
    pa_csv.write_csv(
        pa.table(
            {"name": np.full(count, "Asha"), "mobile": numbers, "order": np.char.add("A", np.arange(count).astype(str))}
        ),
        str(path),
    )
    request = PlanRequest(
        contacts=path,
        channel=channel,
        provider=provider,
        message=message,
        sender="ACMEIN",
        dlt_template=DLT if channel == "sms" else None,
        batch_size=batch_size,
        spread=False,
        **options,
    )  # type: ignore[arg-type]
    campaign_id = save_plan(workers.engine, build_plan(request, PlanContext(prices=PriceTable.load())))
    return campaign_id, [f"+91{n}" for n in numbers]


def launch(workers: Workers, campaign_id: int) -> None:
    """What `campaign send` and `campaign resume` do with workers: running in the database, then the bells."""
    start(workers.engine, campaign_id)
    workers.run("campaign.start_campaign", campaign_id)


def sent_all(workers: Workers, campaign_id: int) -> bool:
    return state_of(workers.engine, campaign_id) in ("completed", "paused", "failed")


def recipients(sandbox: Sandbox, endpoint: str) -> dict[str, int]:
    return sandbox.endpoint(endpoint).get("recipients", {})


def test_a_100k_campaign_through_two_workers_reaches_everyone_once(
    workers: Workers, fresh: Sandbox, tmp_path: Path
) -> None:
    campaign_id, _ = campaign(workers, tmp_path, 100_000)
    launch(workers, campaign_id)
    workers.wait_for(lambda: sent_all(workers, campaign_id), what="the campaign to be sent")
    final = status(workers.engine, campaign_id)
    assert (final.state, final.counts) == ("completed", {"submitted": 100_000})
    accepted = recipients(fresh, "POST /api/v2/sms")
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
    assert outcomes == ["skipped", "skipped", "skipped", "submitted"]
    assert recipients(fresh, "POST /api/v2/sms") == {n: 1 for n in numbers}


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
    accepted = recipients(fresh, "POST /api/v2/sms")
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
    assert recipients(fresh, "POST /v1/rcs/send") == {n: 1 for n in numbers}


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
    assert recipients(fresh, "POST /api/v2/sms") == {n: 1 for n in numbers}
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
    assert recipients(fresh, "POST /api/v2/sms") == {n: 1 for n in numbers}


def test_rcs_with_a_personal_fallback_through_the_workers(workers: Workers, fresh: Sandbox, tmp_path: Path) -> None:
    """Capability answers are cached in Redis; capable devices get RCS, the others the SMS, none both."""
    campaign_id, numbers = campaign(
        workers,
        tmp_path,
        60,
        channel="rcs",
        message="Hi #name#, sale on",
        agent_id="42",
        fallback_message="Order #order#: sale on at ACME",
    )
    launch(workers, campaign_id)
    workers.wait_for(lambda: sent_all(workers, campaign_id), what="the campaign to be sent")
    assert status(workers.engine, campaign_id).counts == {"submitted": 60}
    capable = {n for n in numbers if rcs_capable(SANDBOX, n[1:])}
    assert set(recipients(fresh, "POST /api/v2/rcs/message")) == capable
    assert set(recipients(fresh, "POST /api/v2/sms")) == set(numbers) - capable
    with workers.engine.connect() as connection:
        used = dict(
            connection.execute(select(M.c.address, M.c.channel_used).where(M.c.campaign_id == campaign_id)).all()
        )
    assert {a for a, c in used.items() if c == "rcs"} == capable


def test_rcs_that_fails_after_sending_gets_its_sms_through_the_beat_poller(
    workers: Workers, fresh: Sandbox, tmp_path: Path
) -> None:
    """The poller reads the RCS failures, queues their SMS fallback and rings for it; each number gets one SMS."""
    campaign_id, numbers = campaign(
        workers,
        tmp_path,
        40,
        channel="rcs",
        message="Hi #name#, sale on",
        agent_id="42",
        fallback_message="Order #order#: sale on at ACME",
    )
    launch(workers, campaign_id)
    workers.wait_for(lambda: sent_all(workers, campaign_id), what="the campaign to be sent")
    fresh.advance_clock(5)
    assert workers.run("campaign.poll_dlr")["fallbacks"] > 0
    capable = {n for n in numbers if rcs_capable(SANDBOX, n[1:])}
    reached = {n for n in capable if fate(SANDBOX, n[1:]) == "delivered"}
    workers.wait_for(
        lambda: (
            len(recipients(fresh, "POST /api/v2/sms")) == len(numbers) - len(reached) and sent_all(workers, campaign_id)
        ),
        what="the fallback SMS to be sent",
    )
    assert set(recipients(fresh, "POST /api/v2/sms")) == set(numbers) - reached
    assert set(recipients(fresh, "POST /api/v2/sms").values()) == {1}
    assert workers.run("campaign.poll_dlr")["fallbacks"] == 0  # once


def test_campaign_send_with_a_broker_queues_and_waits(workers: Workers, fresh: Sandbox, tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "config" / "examples" / "contacts.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "send",
            str(example),
            "--provider",
            "noxitel",
            "--sender",
            "ACMEIN",
            "--dlt-template-id",
            "1207161234567890123",
            "--rejects",
            str(tmp_path / "r.csv"),
            "--message",
            "Hi #name#, your order #order# has shipped and will reach you by Friday. -ACME",
            "--yes",
            "--wait",
            "--json",
        ],
        env=workers.env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert (result["state"], result["submitted"]) == ("completed", 20)
    assert "queued for the workers" in done.stderr
    assert len(recipients(fresh, "POST /api/v2/sms")) == 20


def test_the_beat_poller_task_brings_in_the_reports(workers: Workers, fresh: Sandbox, tmp_path: Path) -> None:
    campaign_id, numbers = campaign(workers, tmp_path, 200)
    launch(workers, campaign_id)
    workers.wait_for(lambda: sent_all(workers, campaign_id), what="the campaign to be sent")
    fresh.advance_clock(5)
    assert workers.run("campaign.poll_dlr")["reports"] >= 200
    words = {"delivered": "delivered", "failed": "undeliverable", "expired": "expired"}
    expected = Counter(words[fate(SANDBOX, n[1:])] for n in numbers)
    assert status(workers.engine, campaign_id).counts == dict(expected)
    assert status(workers.engine, campaign_id).batches == {"settled": 1}
