"""The sandbox pushes signed delivery events; the clients parse them into canonical reports."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from engine.providers.base import (
    Channel,
    DeliveryReport,
    EmailBatch,
    InboundMessage,
    OutboundMessage,
    RcsBatch,
    SmsBatch,
)
from engine.providers.noxitel import NoxitelClient
from engine.providers.pixabits import PixabitsClient
from engine.sandbox.outcomes import fate, rcs_capable
from engine.web.webhooks import build_app
from tests.fixtures.campaigns import phones
from tests.fixtures.sandbox import SANDBOX, WEBHOOK_SECRET, Sandbox

DLT = {"dlt_entity_id": "1101234567890", "dlt_template_id": "1107161234567890123"}


@dataclass
class Receiver:
    """A webhook endpoint that records each pushed body and wakes waiters when enough have come."""

    url: str = ""
    bodies: list[tuple[str, bytes, str]] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self.arrived:
            self.bodies.append((request.path, body, request.headers.get("X-Signature", "")))
            self.arrived.notify_all()
        return web.Response(text="ok")

    async def wait_for(self, count: int, timeout: float = 20.0) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.bodies) >= count), timeout)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/{path:.*}", found.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield found
    await runner.cleanup()


def signed(body: bytes, signature: str) -> bool:
    expected = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


async def test_pixabits_pushes_one_signed_event_per_settled_message(sandbox: Sandbox, receiver: Receiver) -> None:
    sandbox.configure(webhook_url=receiver.url + "/webhooks/pixabits")
    numbers = phones(40, 9_700_000_000)
    async with PixabitsClient(sandbox.account(), sandbox.pixabits_url) as client:
        await client.send_sms(SmsBatch("ACMEIN", [OutboundMessage(n, "Sale") for n in numbers], **DLT))
        await client.send_email(
            EmailBatch(
                "news@acme.example",
                [OutboundMessage(f"user{i}@example.com", "<p>Hi</p>", subject="News") for i in range(10)],
            )
        )
        sandbox.advance_clock(5)
        await receiver.wait_for(50)
        assert all(signed(body, signature) for _, body, signature in receiver.bodies)
        reports = [event for _, body, _ in receiver.bodies for event in client.parse_webhook(body)]

    sms = [r for r in reports if isinstance(r, DeliveryReport) and r.channel is Channel.SMS]
    assert sorted(r.to for r in sms) == numbers
    expected = Counter(
        "sms.message.delivered" if fate(SANDBOX, n[1:]) == "delivered" else "sms.message.failed" for n in numbers
    )
    assert Counter(r.status for r in sms) == expected
    assert all(r.message_id and r.occurred_at for r in sms)
    emails = [r for r in reports if r.channel is Channel.EMAIL]
    assert len(emails) == 10
    hard = [r for r in emails if r.status == "email.bounced" and r.detail == "hard"]
    assert len(hard) == sum(fate(SANDBOX, f"user{i}@example.com") == "failed" for i in range(10))


async def test_pixabits_announces_its_own_rcs_fallback(sandbox: Sandbox, receiver: Receiver) -> None:
    sandbox.configure(webhook_url=receiver.url + "/webhooks/pixabits")
    numbers = phones(12, 9_600_000_000)
    async with PixabitsClient(sandbox.account(), sandbox.pixabits_url) as client:
        for number in numbers:
            await client.send_rcs(RcsBatch([OutboundMessage(number, "Sale today")]))
        incapable = {n for n in numbers if not rcs_capable(SANDBOX, n[1:])}
        delivered = {n for n in numbers if rcs_capable(SANDBOX, n[1:]) and fate(SANDBOX, n[1:]) == "delivered"}
        sandbox.advance_clock(5)
        await receiver.wait_for(len(incapable) + len(delivered))
        reports = [e for _, body, _ in receiver.bodies for e in client.parse_webhook(body)]
    assert {r.to for r in reports if r.status == "rcs.fallback.triggered"} == incapable
    assert {r.to for r in reports if r.status == "rcs.message.delivered"} == delivered
    assert set(sandbox.endpoint("SMS-FALLBACK /v1/rcs/send").get("recipients", {})) == incapable


async def test_pixabits_inbound_whatsapp_reply_parses_as_inbound() -> None:
    client = PixabitsClient("unused", "http://127.0.0.1:9")
    try:
        body = (
            b'{"event": "wa.message.received", "timestamp": "2026-03-21T10:05:00Z",'
            b' "data": {"message_id": "wamid_x", "from": "+919876543210", "text": "STOP"}}'
        )
        [event] = client.parse_webhook(body)
    finally:
        await client.aclose()
    assert isinstance(event, InboundMessage)
    assert (event.sender, event.text, event.channel) == ("+919876543210", "STOP", Channel.WHATSAPP)


async def test_noxitel_pushes_sms_reports_to_notify_url(sandbox: Sandbox, receiver: Receiver) -> None:
    numbers = phones(25, 9_500_000_000)
    async with NoxitelClient(sandbox.account(), sandbox.noxitel_url) as client:
        sub = await client.send_sms(
            SmsBatch(
                "NOXITL",
                [OutboundMessage(n, "Sale") for n in numbers],
                notify_url=receiver.url + "/webhooks/noxitel",
                **DLT,
            )
        )
        sandbox.advance_clock(5)
        await receiver.wait_for(25)
        assert all(signed(body, signature) for _, body, signature in receiver.bodies)
        reports = [e for _, body, _ in receiver.bodies for e in client.parse_webhook(body)]
    assert sorted(r.to for r in reports) == numbers
    assert {r.batch_id for r in reports} == {sub.batch_id}
    assert {r.message_id for r in reports} == set(sub.message_ids.values())
    words = {"delivered": "Handset Delivered", "failed": "Undelivered", "expired": "Expired"}
    assert Counter(r.status for r in reports) == Counter(words[fate(SANDBOX, n[1:])] for n in numbers)


async def test_noxitel_rcs_events_and_replies(sandbox: Sandbox, receiver: Receiver) -> None:
    numbers = phones(10, 9_400_000_000)
    async with NoxitelClient(sandbox.account(), sandbox.noxitel_url, rcs_agent_id=42) as client:
        sub = await client.send_rcs(
            RcsBatch(
                [OutboundMessage(n, "Sale") for n in numbers],
                content={"text": "Sale"},
                notify_url=receiver.url + "/rcs",
            )
        )
        sandbox.advance_clock(5)
        await receiver.wait_for(10)
        reports = [e for _, body, _ in receiver.bodies for e in client.parse_webhook(body)]
        reply = client.parse_webhook(
            b'{"event": "message.received", "agentId": "42", "msgId": "m1", "from": "919887111111",'
            b' "timestamp": "2026-05-01T14:17:00Z", "message": {"type": "suggestion"},'
            b' "suggestionResponse": {"postbackData": "m1||REPLY||Stop", "text": "Stop"}}'
        )
    assert {r.message_id for r in reports} == set(sub.message_ids.values())
    assert {r.to for r in reports if r.status == "incompatible"} == {
        n for n in numbers if not rcs_capable(SANDBOX, n[1:])
    }
    assert isinstance(reply[0], InboundMessage) and reply[0].sender == "+919887111111" and reply[0].text == "Stop"


async def test_unknown_events_are_skipped_not_fatal() -> None:
    async with (
        PixabitsClient("unused", "http://127.0.0.1:9") as pixabits,
        NoxitelClient("unused", "http://127.0.0.1:9") as noxitel,
    ):
        assert pixabits.parse_webhook(b'{"event": "voice.call.completed", "data": {"call_id": "c1"}}') == []
        assert noxitel.parse_webhook(b'{"something": "else"}') == []


async def test_the_receiver_takes_only_signed_events() -> None:
    """Valid signatures in either case and with the `sha256=` prefix are taken; the rest is a 401, kept nowhere."""
    taken: list[object] = []

    async def listener(provider: str, events: list[object]) -> None:
        taken.extend(events)

    parser = PixabitsClient("unused", "http://127.0.0.1:9")
    runner = web.AppRunner(build_app("s3cret", {"pixabits": parser}, listener), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/webhooks/pixabits"  # type: ignore[union-attr]
    body = b'{"event": "sms.message.delivered", "data": {"message_id": "m1", "to": "+919876543210"}}'
    good = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    try:
        async with aiohttp.ClientSession() as session:
            answers = []
            for signature in (good, "sha256=" + good.upper(), "SHA256=" + good, None, "0" * 64, "caf\u00e9"):
                headers = {"X-Signature": signature} if signature is not None else {}
                async with session.post(url, data=body, headers=headers) as response:
                    answers.append(response.status)
    finally:
        await runner.cleanup()
        await parser.aclose()
    assert answers == [200, 200, 200, 401, 401, 401]
    assert len(taken) == 3
