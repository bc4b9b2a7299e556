"""The sandbox itself: limits, stats, deterministic fates, faults and its command line."""

from __future__ import annotations

import asyncio
import os
import socket
import urllib.error
from collections import Counter

import pytest

from engine.providers.base import OutboundMessage, SmsBatch
from engine.providers.errors import OutcomeUnknown, RateLimited, RequestRejected, TransientError
from engine.providers.noxitel import NoxitelClient
from engine.providers.pixabits import PixabitsClient
from engine.sandbox.config import SandboxConfig
from engine.sandbox.outcomes import fate, rcs_capable
from tests.fixtures.campaigns import phones
from tests.fixtures.cli import campaign
from tests.fixtures.sandbox import Sandbox


def one(number: str) -> SmsBatch:
    return SmsBatch("ACMEIN", [OutboundMessage(number, "Hi")])


async def test_starter_plan_allows_its_burst_then_answers_429(sandbox: Sandbox) -> None:
    async with PixabitsClient(sandbox.account(plan="starter"), sandbox.pixabits_url) as client:
        results = await asyncio.gather(
            *(client.send_sms(one(n)) for n in phones(80, 9_800_000_000)), return_exceptions=True
        )
    accepted = [r for r in results if not isinstance(r, BaseException)]
    limited = [r for r in results if isinstance(r, RateLimited)]
    assert len(accepted) + len(limited) == 80
    assert 50 <= len(accepted) <= 52  # burst of 50, plus what 10/s refills while they arrive
    stats = sandbox.endpoint("POST /v2/sms/send")
    assert stats["rate_limited"] == len(limited)
    assert stats["statuses"] == {"200": len(accepted), "429": len(limited)}
    assert stats["max_rate_1s"] == 80  # every request counts towards the observed rate
    assert stats["distinct_recipients"] == len(accepted)


async def test_stats_count_a_recipient_sent_twice(sandbox: Sandbox) -> None:
    async with PixabitsClient(sandbox.account(), sandbox.pixabits_url) as client:
        await client.send_sms(one("+919800000001"))
        await client.send_sms(one("+919800000001"))
        await client.send_sms(one("+919800000002"))
    stats = sandbox.endpoint("POST /v2/sms/send")
    assert stats["duplicate_recipients"] == {"+919800000001": 2}
    assert stats["recipients"] == {"+919800000001": 2, "+919800000002": 1}
    assert sandbox.stats(recipients=False)["endpoints"]["POST /v2/sms/send"].get("recipients") is None


async def test_a_batch_with_the_same_number_twice_is_refused(sandbox: Sandbox) -> None:
    """Delivery reports are matched on (batch, number): a batch must not hold a number twice."""
    async with NoxitelClient(sandbox.account(), sandbox.noxitel_url) as client:
        with pytest.raises(RequestRejected, match="more than once"):
            await client.send_sms(SmsBatch("NOXITL", [OutboundMessage("+919800000001", "a")] * 2))


def test_fates_are_deterministic_per_number_and_seed_and_follow_the_shares() -> None:
    config = SandboxConfig(seed=3, delivered_share=0.8, failed_share=0.15, rcs_share=0.25)
    numbers = [n[1:] for n in phones(20_000, 9_800_000_000)]
    fates = Counter(fate(config, n) for n in numbers)
    assert fates["delivered"] / 20_000 == pytest.approx(0.80, abs=0.01)
    assert fates["failed"] / 20_000 == pytest.approx(0.15, abs=0.01)
    assert fates["expired"] / 20_000 == pytest.approx(0.05, abs=0.01)
    assert sum(rcs_capable(config, n) for n in numbers) / 20_000 == pytest.approx(0.25, abs=0.01)
    assert [fate(config, n) for n in numbers[:200]] != [fate(SandboxConfig(seed=4), n) for n in numbers[:200]]


async def test_5xx_share_fails_requests_before_they_are_acted_on(sandbox: Sandbox) -> None:
    sandbox.configure(fault_5xx_share=1.0)
    async with PixabitsClient(sandbox.account(), sandbox.pixabits_url) as client:
        with pytest.raises(TransientError):
            await client.send_sms(one("+919800000001"))
    assert sandbox.endpoint("POST /v2/sms/send")["messages"] == 0


async def test_drop_share_accepts_then_drops_the_connection(sandbox: Sandbox) -> None:
    sandbox.configure(fault_drop_share=1.0)
    async with NoxitelClient(sandbox.account(), sandbox.noxitel_url) as client:
        with pytest.raises(OutcomeUnknown):
            await client.send_sms(one("+919800000001"))
    assert sandbox.endpoint("POST /api/v2/sms")["recipients"] == {"+919800000001": 1}


async def test_added_latency_delays_every_answer(sandbox: Sandbox) -> None:
    sandbox.configure(latency_ms=2_000)
    async with PixabitsClient(sandbox.account(), sandbox.pixabits_url, total_timeout=0.3) as client:
        with pytest.raises(OutcomeUnknown):
            await client.balance()


async def test_reset_restores_the_starting_configuration(sandbox: Sandbox) -> None:
    sandbox.configure(fault_5xx_share=1.0, plan="starter")
    sandbox.reset()
    config = sandbox.admin("config")
    assert (config["fault_5xx_share"], config["plan"]) == (0.0, "growth")


def test_bad_settings_are_refused_without_changing_anything(sandbox: Sandbox) -> None:
    with pytest.raises(urllib.error.HTTPError, match="400"):
        sandbox.configure(delivered_share=1.5)
    with pytest.raises(urllib.error.HTTPError, match="400"):
        sandbox.configure(no_such_knob=1)
    assert sandbox.admin("config")["delivered_share"] == 0.9


def test_cli_refuses_an_unknown_plan_with_one_line() -> None:
    done = campaign(os.environ, "sandbox", "--port", "0", "--plan", "platinum", timeout=60)
    assert done.returncode == 1
    assert "unknown plan 'platinum'" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_reports_a_busy_port_without_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = campaign(os.environ, "sandbox", "--port", str(taken.getsockname()[1]), timeout=60)
    assert done.returncode == 1
    assert "cannot listen on 127.0.0.1" in done.stderr
    assert "Traceback" not in done.stderr
