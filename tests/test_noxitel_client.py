"""Contract tests: the Noxitel client against the sandbox over loopback HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from engine.errors import BatchTooLarge, InvalidRequest
from engine.providers.base import (
    OutboundMessage,
    RcsBatch,
    SmsBatch,
    SmsFallback,
    WhatsAppBatch,
    WhatsAppTemplate,
)
from engine.providers.errors import (
    AuthenticationFailed,
    InsufficientCredits,
    RateLimited,
    RequestRejected,
    TransientError,
)
from engine.providers.noxitel import NoxitelClient
from engine.sandbox.outcomes import fate, rcs_capable, whatsapp_window_open
from tests.fixtures.campaigns import phones
from tests.fixtures.sandbox import SANDBOX, Sandbox

#: The first number these tests send to (+91 98000 00000).
FIRST = 9_800_000_000
DLT = {"dlt_entity_id": "1101234567890", "dlt_template_id": "1107161234567890123"}


def personalised(count: int, start: int = 0) -> SmsBatch:
    messages = [
        OutboundMessage(n, f"Hi Sam{i}, your OTP is {i:04d}", params={"name": f"Sam{i}", "otp": f"{i:04d}"})
        for i, n in enumerate(phones(count, FIRST + start))
    ]
    return SmsBatch("NOXITL", messages, template="Hi #name#, your OTP is #otp#", **DLT)


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[NoxitelClient]:
    async with NoxitelClient(sandbox.account(), sandbox.noxitel_url, rcs_agent_id=42) as c:
        yield c


async def test_personalised_sms_goes_as_template_with_parameters(client: NoxitelClient, sandbox: Sandbox) -> None:
    sub = await client.send_sms(personalised(3))
    assert sub.accepted == 3
    assert sub.batch_id
    assert set(sub.message_ids) == set(phones(3, FIRST))
    body = sandbox.last_body("POST /api/v2/sms")
    assert body["message"] == "Hi #name#, your OTP is #otp#"
    assert body["contacts"][1] == {"mobile": "919800000001", "parameters": {"name": "Sam1", "otp": "0001"}}
    assert body["mode"] == "text"
    assert body["dlt_template_id"] == DLT["dlt_template_id"]


async def test_unicode_mode_is_chosen_when_the_text_needs_it(client: NoxitelClient, sandbox: Sandbox) -> None:
    await client.send_sms(SmsBatch("NOXITL", [OutboundMessage(n, "नमस्ते, offer ₹99") for n in phones(2, FIRST)]))
    assert sandbox.last_body("POST /api/v2/sms")["mode"] == "unicode"
    await client.send_sms(
        SmsBatch("NOXITL", [OutboundMessage("+919800000009", "Hi José", params={"name": "José"})], template="Hi #name#")
    )
    assert sandbox.last_body("POST /api/v2/sms")["mode"] == "text"  # é is GSM-7
    await client.send_sms(
        SmsBatch("NOXITL", [OutboundMessage("+919800000009", "Hi 李", params={"name": "李"})], template="Hi #name#")
    )
    assert sandbox.last_body("POST /api/v2/sms")["mode"] == "unicode"  # a parameter forces it


async def test_different_texts_without_a_template_are_refused(client: NoxitelClient, sandbox: Sandbox) -> None:
    with pytest.raises(InvalidRequest, match="one message text per call"):
        await client.send_sms(
            SmsBatch("NOXITL", [OutboundMessage("+919800000001", "a"), OutboundMessage("+919800000002", "b")])
        )
    assert sandbox.stats()["endpoints"] == {}


async def test_delivery_reports_settle_to_the_sandbox_fates(client: NoxitelClient, sandbox: Sandbox) -> None:
    sub = await client.send_sms(personalised(200))
    pending = await client.sms_reports(batch_id=sub.batch_id)
    assert {r.status for r in pending} == {"Pending"}
    sandbox.advance_clock(5)
    reports = await client.sms_reports(batch_id=sub.batch_id)
    assert sorted(r.to for r in reports) == phones(200, FIRST)
    words = {"delivered": "Handset Delivered", "failed": "Undelivered", "expired": "Expired"}
    assert Counter(r.status for r in reports) == Counter(words[fate(SANDBOX, n[1:])] for n in phones(200, FIRST))
    delivered = next(r for r in reports if r.status == "Handset Delivered")
    assert delivered.detail == "DELIVRD" and delivered.occurred_at is not None
    assert delivered.batch_id == sub.batch_id
    one = await client.sms_reports(sms_id=sub.message_ids[delivered.to])
    assert [(r.to, r.status) for r in one] == [(delivered.to, "Handset Delivered")]


async def test_india_sms_without_dlt_is_rejected_by_the_operator(client: NoxitelClient, sandbox: Sandbox) -> None:
    sub = await client.send_sms(SmsBatch("NOXITL", [OutboundMessage(n, "Sale!") for n in phones(5, FIRST)]))
    sandbox.advance_clock(5)
    reports = await client.sms_reports(batch_id=sub.batch_id)
    assert {(r.status, r.detail) for r in reports} == {("DLT Template Not Registered", "REJECTD")}


async def test_credits_draw_down_per_segment(sandbox: Sandbox) -> None:
    async with NoxitelClient(sandbox.account(credits=1_000), sandbox.noxitel_url) as client:
        await client.send_sms(SmsBatch("NOXITL", [OutboundMessage(n, "x" * 200) for n in phones(4, FIRST)], **DLT))
        balance = await client.balance()
    assert balance.credits == 1_000 - 4 * 2  # 200 GSM-7 characters are two segments
    assert balance.currency == "USD"


async def test_oversize_sms_batch_is_refused_before_sending(client: NoxitelClient, sandbox: Sandbox) -> None:
    with pytest.raises(BatchTooLarge):
        await client.send_sms(SmsBatch("NOXITL", [OutboundMessage(n, "x") for n in phones(50_001, FIRST)]))
    assert sandbox.stats()["endpoints"] == {}


async def test_missing_and_wrong_keys_are_403(sandbox: Sandbox) -> None:
    async with NoxitelClient("", sandbox.noxitel_url) as client:
        with pytest.raises(AuthenticationFailed, match="API Key Missing") as missing:
            await client.balance()
    assert missing.value.status == 403
    secret = "nox_live_SECRET_ABCDEFGH"
    async with NoxitelClient(secret, sandbox.noxitel_url) as client:
        with pytest.raises(AuthenticationFailed, match="Invalid API Key") as caught:
            await client.balance()
    assert caught.value.status == 403
    assert "NOXITEL_API_KEY" in str(caught.value)
    assert secret not in str(caught.value)


async def test_ip_not_whitelisted_is_401(client: NoxitelClient, sandbox: Sandbox) -> None:
    sandbox.configure(allowed_ips=["10.1.2.3"])
    with pytest.raises(AuthenticationFailed, match="IP not whitelisted") as caught:
        await client.balance()
    assert caught.value.status == 401


async def test_out_of_credits_is_402(sandbox: Sandbox) -> None:
    async with NoxitelClient(sandbox.account(credits=2), sandbox.noxitel_url) as client:
        with pytest.raises(InsufficientCredits) as caught:
            await client.send_sms(personalised(3))
        assert caught.value.status == 402
        with pytest.raises(InsufficientCredits, match="enough credits"):
            await client.send_whatsapp(WhatsAppBatch([OutboundMessage(n, "hi") for n in phones(3, FIRST)]))


async def test_rate_limit_is_429_with_retry_after(sandbox: Sandbox) -> None:
    sandbox.configure(noxitel_rate=1)
    async with NoxitelClient(sandbox.account(), sandbox.noxitel_url) as client:
        await client.balance()
        with pytest.raises(RateLimited) as caught:
            await client.balance()
    assert caught.value.retry_after == 1
    assert caught.value.status == 429


async def test_server_error_is_transient(client: NoxitelClient, sandbox: Sandbox) -> None:
    sandbox.faults("/api/v2/sms", "500")
    with pytest.raises(TransientError) as caught:
        await client.send_sms(personalised(1))
    assert caught.value.status == 500


async def test_bad_number_is_rejected_with_the_providers_message(client: NoxitelClient) -> None:
    with pytest.raises(RequestRejected, match=r"contacts\[0\]\.mobile") as caught:
        await client.send_sms(SmsBatch("NOXITL", [OutboundMessage("+12", "hi")]))
    assert caught.value.status == 400


async def test_rcs_capability_follows_the_device(client: NoxitelClient) -> None:
    for number in phones(20, FIRST):
        capability = await client.rcs_capability(number)
        assert capability.enabled == rcs_capable(SANDBOX, number[1:])
        assert bool(capability.features) == capability.enabled
    async with NoxitelClient("k", "http://127.0.0.1:9") as no_agent:
        with pytest.raises(InvalidRequest, match="agent id"):
            await no_agent.rcs_capability("+919800000000")


async def test_rcs_with_provider_fallback(client: NoxitelClient, sandbox: Sandbox) -> None:
    batch = RcsBatch(
        [OutboundMessage(n, params={"name": "Sam"}) for n in phones(50, FIRST)],
        template="Hi #name#",
        fallback=SmsFallback("NOXITL", "Hi, see our sale", route_id=1),
        traffic_type="PROMOTION",
    )
    sub = await client.send_rcs(batch)
    assert sub.accepted == 50 and len(sub.message_ids) == 50
    body = sandbox.last_body("POST /api/v2/rcs/message")
    assert body["content"]["text"] == "Hi #name#" and body["agentId"] == 42
    assert body["smsFallback"] == {"enabled": True, "sender": "NOXITL", "message": "Hi, see our sale", "routeId": 1}
    incapable = {n for n in phones(50, FIRST) if not rcs_capable(SANDBOX, n[1:])}
    assert set(sandbox.endpoint("SMS-FALLBACK /api/v2/rcs/message").get("recipients", {})) == incapable
    sandbox.advance_clock(5)
    reports = await client.rcs_reports(batch_id=sub.batch_id)
    assert {r.to for r in reports if r.status == "incompatible"} == incapable
    assert {r.message_id for r in reports} == set(sub.message_ids.values())


async def test_whatsapp_text_template_and_reports(client: NoxitelClient, sandbox: Sandbox) -> None:
    text = await client.send_whatsapp(WhatsAppBatch([OutboundMessage(n, "Order shipped") for n in phones(2, FIRST)]))
    assert text.cost == pytest.approx(0.10)
    template = WhatsAppTemplate("welcome_template", buttons=[{"index": 0, "url": "https://brand.example/offer"}])
    sub = await client.send_whatsapp(
        WhatsAppBatch([OutboundMessage("+919800000005", params={"1": "Sam", "2": "Special Offer"})], template=template)
    )
    contact = sandbox.last_body("POST /api/v2/whatsapp/message")["contacts"][0]
    assert contact["msisdn"] == "919800000005"
    assert contact["parameters"]["body"] == ["Sam", "Special Offer"]
    report = await client.whatsapp_report(sub.message_ids["+919800000005"])
    assert report.status == "sent" and report.to == "+919800000005"
    sandbox.advance_clock(5)
    settled = await client.whatsapp_report(sub.message_ids["+919800000005"])
    assert settled.status == ("delivered" if fate(SANDBOX, "919800000005") == "delivered" else "failed")
    assert await client.whatsapp_window_open("+919800000005", "1234567890") == whatsapp_window_open(
        SANDBOX, "919800000005"
    )


async def test_rich_cards_and_carousels_go_in_the_published_shapes(client: NoxitelClient, sandbox: Sandbox) -> None:
    card = {
        "orientation": "VERTICAL",
        "card": {
            "title": "Flash Sale 40% Off",
            "description": "Use FLASH40",
            "media": {"url": "https://cdn.example.com/sale.jpg"},
        },
    }
    sub = await client.send_rcs(
        RcsBatch([OutboundMessage(n) for n in phones(2, FIRST)], kind="rich_card", content=card)
    )
    body = sandbox.last_body("POST /api/v2/rcs/message")
    assert (body["type"], body["content"]) == ("rich_card", card)
    assert body["contacts"] == [{"mobile": "919800000000"}, {"mobile": "919800000001"}]
    carousel = {"cardWidth": "MEDIUM", "cards": [{"title": "Basic"}, {"title": "Pro"}]}
    await client.send_rcs(RcsBatch([OutboundMessage("+919800000009")], kind="carousel", content=carousel))
    assert sandbox.last_body("POST /api/v2/rcs/message")["content"] == carousel
    with pytest.raises(RequestRejected, match="1 to 10 cards"):
        await client.send_rcs(RcsBatch([OutboundMessage("+919800000009")], kind="carousel", content={"cards": []}))
    one = await client.rcs_reports(msg_id=sub.message_ids["+919800000001"])
    assert [(r.to, r.message_id) for r in one] == [("+919800000001", sub.message_ids["+919800000001"])]
