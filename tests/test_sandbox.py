"""The sandbox itself: limits, stats, deterministic fates, faults, its control token and its command line."""

from __future__ import annotations

import asyncio
import os
import socket
import urllib.error
from collections import Counter
from typing import Any

import aiohttp
import pytest

from engine.accounts import open_provider
from engine.providers.base import OutboundMessage, SmsBatch
from engine.providers.errors import OutcomeUnknown, RateLimited, RequestRejected, TransientError
from engine.providers.noxitel import NoxitelClient
from engine.providers.pixabits import PixabitsClient
from engine.sandbox.config import SandboxConfig
from engine.sandbox.outcomes import fate, rcs_capable
from engine.sandbox.server import serve
from engine.settings import MAX_SMS_PARTS, Settings
from tests.fixtures.campaigns import phones
from tests.fixtures.cli import campaign
from tests.fixtures.sandbox import CONTROL_TOKEN, Sandbox, read_line, sandbox_process

#: Every control endpoint that reads or changes something, with a body that would change it.
CONTROLS: list[tuple[str, str, Any]] = [
    ("POST", "reset", {}),
    ("GET", "stats", None),
    ("GET", "requests?endpoint=POST%20/v2/sms/send", None),
    ("GET", "config", None),
    ("POST", "config", {"fault_5xx_share": 1.0}),
    ("POST", "accounts", {"api_key": "intruder-key"}),
    ("POST", "faults", {"path": "*", "actions": ["503"]}),
    ("POST", "clock", {"advance": 86_400}),
]
#: GSM-7 texts of exactly the most parts the engine allows, and of one part more (153 characters a part).
AT_LIMIT = "a" * 153 * MAX_SMS_PARTS
OVER_LIMIT = AT_LIMIT + "a"
TOO_MANY = f"takes {MAX_SMS_PARTS + 1} SMS parts; at most {MAX_SMS_PARTS} are allowed"


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


# --- the control token ---------------------------------------------------------------------------------------------


async def test_control_endpoints_refuse_requests_without_the_control_token(sandbox: Sandbox) -> None:
    """Without the token nobody reads the numbers and texts sent, nor changes accounts, faults or the clock."""
    key = sandbox.account()
    async with PixabitsClient(key, sandbox.pixabits_url) as client:
        await client.send_sms(one("+919800000001"))
    refusals = [(None, "missing control token"), ("not-the-control-token", "wrong control token"), (key, "wrong")]
    for method, path, body in [*CONTROLS, ("GET", "otp/ABC123", None)]:
        for bearer, problem in refusals:
            status, answer = sandbox.call("/_sandbox/" + path, body, bearer, method)
            assert status == 401 and problem in answer["error"], (method, path, bearer, answer)
    assert sandbox.admin("config")["fault_5xx_share"] == 0.0
    assert sandbox.admin("clock", {"advance": 0})["offset"] == 0.0
    assert sandbox.last_body("POST /v2/sms/send")["to"] == "+919800000001"
    assert sandbox.call("/v1/billing/wallet", bearer="intruder-key")[0] == 401
    assert sandbox.call("/v1/billing/wallet", bearer=key)[0] == 200  # no fault was scripted
    assert sandbox.call("/_sandbox/health") == (200, {"status": "ok"})  # liveness tells nothing


def test_control_endpoints_answer_with_the_control_token(sandbox: Sandbox) -> None:
    for method, path, body in CONTROLS:
        status, answer = sandbox.call("/_sandbox/" + path, body, CONTROL_TOKEN, method)
        assert status == 200, (method, path, answer)
    assert sandbox.admin("config")["fault_5xx_share"] == 1.0
    assert sandbox.admin("clock", {"advance": 0})["offset"] == 86_400


def test_the_control_token_is_never_shown_nor_changed_through_the_config(sandbox: Sandbox) -> None:
    assert sandbox.admin("config")["control_token"] is True
    assert CONTROL_TOKEN not in str(sandbox.admin("config"))
    with pytest.raises(urllib.error.HTTPError, match="400"):
        sandbox.configure(control_token="another-token-of-some-length")
    assert sandbox.call("/_sandbox/stats", bearer="another-token-of-some-length")[0] == 401


async def test_a_sandbox_started_without_a_control_token_refuses_every_control_request() -> None:
    """The embedded sandbox of local mode and the demo has none: nothing outside the command can steer it."""
    async with serve(SandboxConfig()) as url, aiohttp.ClientSession() as session:
        headers = {"Authorization": "Bearer any-token-at-all-of-some-length"}
        async with session.get(url + "/_sandbox/stats", headers=headers) as answer:
            assert answer.status == 401
            assert "without a control token" in (await answer.json())["error"]
        async with session.get(url + "/_sandbox/health") as answer:
            assert answer.status == 200


def test_cli_makes_up_a_control_token_when_none_is_set_and_prints_it_once() -> None:
    env = {name: value for name, value in os.environ.items() if name != "SANDBOX_CONTROL_TOKEN"}
    with sandbox_process(env=env) as (process, url):
        line = read_line(process)
        token = line.rsplit(" ", 1)[-1].strip()
        assert f"{url}/_sandbox/*" in line and len(token) >= 16
        assert Sandbox(url, token).call("/_sandbox/stats", bearer=token)[0] == 200
        assert Sandbox(url, token).call("/_sandbox/stats")[0] == 401


def test_cli_refuses_a_short_control_token_with_one_line() -> None:
    done = campaign(os.environ, "sandbox", "--port", "0", "--control-token", "guessable", timeout=60)
    assert done.returncode == 1
    assert "at least 16 characters" in done.stderr and "guessable" not in done.stderr
    assert "Traceback" not in done.stderr


# --- the SMS part limit ----------------------------------------------------------------------------------------


def pixabits_bulk(*texts: str) -> dict[str, Any]:
    return {"sender": "ACMEIN", "messages": [{"to": f"+9198000000{i:02d}", "body": t} for i, t in enumerate(texts)]}


def test_pixabits_refuses_an_sms_over_the_part_limit_as_a_validation_error(sandbox: Sandbox) -> None:
    key = sandbox.account()
    status, answer = sandbox.call("/v2/sms/send", {"to": "+919800000001", "body": OVER_LIMIT}, key)
    assert (status, answer) == (
        422,
        {
            "status": 422,
            "code": "VALIDATION_ERROR",
            "message": f"body: {TOO_MANY}",
            "errors": [{"field": "body", "message": TOO_MANY}],
        },
    )
    status, answer = sandbox.call("/v2/sms/bulk", pixabits_bulk("Hi", OVER_LIMIT), key)
    assert (status, answer["errors"]) == (422, [{"field": "messages[1].body", "message": TOO_MANY}])
    assert sandbox.recipients("POST /v2/sms/send") == sandbox.recipients("POST /v2/sms/bulk") == {}
    status, answer = sandbox.call("/v2/sms/send", {"to": "+919800000001", "body": AT_LIMIT}, key)
    assert status == 200 and answer["credits_used"] == pytest.approx(0.15 * MAX_SMS_PARTS)
    assert sandbox.call("/v2/sms/bulk", pixabits_bulk("Hi", AT_LIMIT), key)[0] == 200


def noxitel_sms(*names: str) -> dict[str, Any]:
    """One `#name#` message to a contact per name."""
    contacts = [{"mobile": f"9198000000{i:02d}", "parameters": {"name": n}} for i, n in enumerate(names)]
    return {"sender": "ACMEIN", "message": "#name#", "contacts": contacts}


def test_noxitel_refuses_an_sms_over_the_part_limit_as_a_bad_request(sandbox: Sandbox) -> None:
    key = sandbox.account()
    status, answer = sandbox.call("/api/v2/sms", noxitel_sms("Sam", OVER_LIMIT), key)
    message = f"Message too long for contacts[1]: {MAX_SMS_PARTS + 1} SMS parts; at most {MAX_SMS_PARTS} are allowed"
    assert (status, answer) == (400, {"success": False, "status": 400, "message": message})
    assert sandbox.recipients("POST /api/v2/sms") == {}
    # Each text is counted in its own encoding: a Hindi name beside it does not make a GSM-7 text UCS-2.
    status, answer = sandbox.call("/api/v2/sms", noxitel_sms("सैम", AT_LIMIT), key)
    assert (status, answer["total_contacts"]) == (200, 2)
    unicode = {**noxitel_sms("Sam", "स" * 67 * MAX_SMS_PARTS + "स"), "mode": "unicode"}
    assert sandbox.call("/api/v2/sms", unicode, key)[0] == 400


def test_noxitel_refuses_an_rcs_sms_fallback_over_the_part_limit(sandbox: Sandbox) -> None:
    key = sandbox.account()

    def rcs(fallback: str) -> dict[str, Any]:
        return {
            "type": "text",
            "content": {"text": "Hi"},
            "contacts": [{"mobile": "919800000001"}],
            "smsFallback": {"enabled": True, "sender": "ACMEIN", "message": fallback},
        }

    status, answer = sandbox.call("/api/v2/rcs/message", rcs(OVER_LIMIT), key)
    assert (status, answer["success"], answer["status"]) == (400, False, 400)
    assert answer["message"].startswith("smsFallback.message too long")
    assert sandbox.call("/api/v2/rcs/message", rcs(AT_LIMIT), key)[0] == 200


def test_the_part_limit_is_a_knob_of_the_sandbox(sandbox: Sandbox) -> None:
    key = sandbox.account()
    sandbox.configure(max_sms_parts=6)
    assert sandbox.call("/v2/sms/send", {"to": "+919800000001", "body": "a" * 153 * 7}, key)[0] == 422
    assert sandbox.call("/api/v2/sms", noxitel_sms("a" * 153 * 7), key)[0] == 400
    assert sandbox.call("/v2/sms/send", {"to": "+919800000001", "body": "a" * 153 * 6}, key)[0] == 200
    with pytest.raises(urllib.error.HTTPError, match="400"):
        sandbox.configure(max_sms_parts=0)


async def test_the_embedded_sandbox_takes_the_engines_part_limit() -> None:
    """Local mode's sandbox refuses no message the planner let through under CAMPAIGN_MAX_SMS_PARTS."""
    settings = Settings(_env_file=None, max_sms_parts=MAX_SMS_PARTS + 2)  # type: ignore[call-arg]
    longest = SmsBatch("ACMEIN", [OutboundMessage("+919800000001", "a" * 153 * (MAX_SMS_PARTS + 2))])
    async with open_provider("pixabits", settings) as client:
        assert (await client.send_sms(longest)).accepted == 1
