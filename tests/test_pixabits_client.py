"""Contract tests: the Pixabits client against the sandbox over loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from engine.errors import BatchTooLarge, InvalidRequest
from engine.providers.base import (
    EmailBatch,
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
    OutcomeUnknown,
    RateLimited,
    RequestRejected,
    TransientError,
)
from engine.providers.pixabits import PixabitsClient
from tests.fixtures.campaigns import phones
from tests.fixtures.sandbox import Sandbox

#: The first number these tests send to (+91 98000 00000).
FIRST = 9_800_000_000


def sms_batch(count: int, text: str = "Hello from ACME", start: int = 0) -> SmsBatch:
    return SmsBatch("ACMEIN", [OutboundMessage(n, text) for n in phones(count, FIRST + start)])


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[PixabitsClient]:
    async with PixabitsClient(sandbox.account(), sandbox.pixabits_url) as c:
        yield c


async def test_single_sms_gets_a_message_id_and_its_cost(client: PixabitsClient, sandbox: Sandbox) -> None:
    sub = await client.send_sms(
        SmsBatch("PIXABT", [OutboundMessage("+919876543210", "Your OTP is 482901")], kind="otp")
    )
    assert sub.accepted == 1
    assert sub.message_ids["+919876543210"].startswith("msg_")
    assert sub.status == "queued"
    assert sub.cost == pytest.approx(0.15)
    assert sandbox.last_body("POST /v2/sms/send") == {
        "to": "+919876543210",
        "body": "Your OTP is 482901",
        "sender": "PIXABT",
        "type": "otp",
    }


async def test_bulk_sms_sends_each_recipient_once_with_dlt_ids(client: PixabitsClient, sandbox: Sandbox) -> None:
    batch = sms_batch(500)
    batch = SmsBatch(batch.sender, batch.messages, dlt_entity_id="1101234567890", dlt_template_id="1107161234567890123")
    sub = await client.send_sms(batch)
    assert sub.accepted == 500
    assert sub.batch_id and sub.batch_id.startswith("batch_")
    assert sub.status == "processing"
    stats = sandbox.endpoint("POST /v2/sms/bulk")
    assert stats["messages"] == 500
    assert stats["distinct_recipients"] == 500
    assert stats["duplicate_recipients"] == {}
    body = sandbox.last_body("POST /v2/sms/bulk")
    assert body["messages"][0] == {"to": "+919800000000", "body": "Hello from ACME"}
    assert body["dlt_template_id"] == "1107161234567890123"


async def test_oversize_batches_are_refused_before_any_request(client: PixabitsClient, sandbox: Sandbox) -> None:
    with pytest.raises(BatchTooLarge, match="50,001"):
        await client.send_sms(sms_batch(50_001))
    emails = [OutboundMessage(f"user{i}@example.com", "<p>Hi</p>", subject="Hi") for i in range(10_001)]
    with pytest.raises(BatchTooLarge, match="10,000"):
        await client.send_email(EmailBatch("news@acme.example", emails))
    with pytest.raises(BatchTooLarge):
        await client.send_rcs(RcsBatch([OutboundMessage(n, "Hi") for n in phones(2, FIRST)]))
    assert sandbox.stats()["endpoints"] == {}


async def test_full_size_bulk_is_accepted(client: PixabitsClient, sandbox: Sandbox) -> None:
    sub = await client.send_sms(sms_batch(50_000))
    assert sub.accepted == 50_000
    assert sandbox.stats(recipients=False)["endpoints"]["POST /v2/sms/bulk"]["distinct_recipients"] == 50_000


async def test_email_single_and_bulk(client: PixabitsClient, sandbox: Sandbox) -> None:
    one = await client.send_email(
        EmailBatch(
            "noreply@acme.example",
            [OutboundMessage("user@example.com", "<h1>Invoice</h1>", subject="Your Invoice #1234")],
        )
    )
    assert one.message_ids["user@example.com"].startswith("email_")
    many = await client.send_email(
        EmailBatch(
            "noreply@acme.example",
            [OutboundMessage(f"user{i}@example.com", f"<p>Hi {i}</p>", subject="News") for i in range(3)],
        )
    )
    assert many.accepted == 3 and many.batch_id
    assert sandbox.last_body("POST /v2/email/send/bulk")["messages"][2] == {
        "to": "user2@example.com",
        "subject": "News",
        "html": "<p>Hi 2</p>",
    }


async def test_rcs_is_one_text_per_call(client: PixabitsClient, sandbox: Sandbox) -> None:
    sub = await client.send_rcs(
        RcsBatch(
            [OutboundMessage("+919876543210", "Sale today")],
            content={"suggestions": [{"type": "reply", "text": "Stop"}]},
        )
    )
    assert sub.message_ids["+919876543210"].startswith("rcs_")
    assert sandbox.last_body("POST /v1/rcs/send") == {
        "to": "+919876543210",
        "text": "Sale today",
        "suggestions": [{"type": "reply", "text": "Stop"}],
    }
    with pytest.raises(InvalidRequest, match="dashboard"):
        await client.send_rcs(RcsBatch([OutboundMessage("+919876543210", "x")], fallback=SmsFallback("ACME", "x")))
    with pytest.raises(InvalidRequest, match="rich_card"):
        await client.send_rcs(RcsBatch([OutboundMessage("+919876543210", "x")], kind="rich_card"))


async def test_whatsapp_text_and_template(client: PixabitsClient, sandbox: Sandbox) -> None:
    text = await client.send_whatsapp(WhatsAppBatch([OutboundMessage("+919876543210", "Hello!")]))
    assert text.message_ids["+919876543210"].startswith("wamid_")
    assert text.status == "sent"
    template = WhatsAppTemplate("welcome_template", header=[{"type": "text", "value": "Welcome!"}])
    await client.send_whatsapp(
        WhatsAppBatch([OutboundMessage("+919876543210", params={"2": "Offer", "1": "Sam"})], template=template)
    )
    body = sandbox.last_body("POST /v1/wa/messages/template")
    assert body["parameters"]["body"] == ["Sam", "Offer"]
    assert body["template_id"] == "welcome_template"


async def test_wallet_draws_down_with_sends(sandbox: Sandbox) -> None:
    async with PixabitsClient(sandbox.account(credits=100.0), sandbox.pixabits_url) as client:
        before = await client.balance()
        await client.send_sms(sms_batch(10))
        after = await client.balance()
    assert before.credits == pytest.approx(100.0)
    assert after.credits == pytest.approx(100.0 - 10 * 0.15)
    assert after.plan == "growth"


async def test_bad_key_is_an_authentication_error_that_names_the_setting(sandbox: Sandbox) -> None:
    secret = "pxb_live_SECRET_123456789"
    async with PixabitsClient(secret, sandbox.pixabits_url) as client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.send_sms(sms_batch(1))
    assert caught.value.status == 401
    assert caught.value.provider == "pixabits"
    assert "PIXABITS_API_KEY" in str(caught.value)
    assert secret not in str(caught.value) and secret not in repr(caught.value)


async def test_validation_errors_carry_the_providers_message(client: PixabitsClient) -> None:
    with pytest.raises(RequestRejected) as caught:
        await client.send_sms(SmsBatch("ACME", [OutboundMessage("9876543210", "hi"), OutboundMessage("+9198", "hi")]))
    assert caught.value.status == 422
    assert "messages[0].to" in caught.value.message and "E.164" in caught.value.message


async def test_rate_limit_surfaces_retry_after(sandbox: Sandbox) -> None:
    async with PixabitsClient(sandbox.account(plan="starter"), sandbox.pixabits_url) as client:
        results = await asyncio.gather(
            *(client.send_sms(sms_batch(1, start=i)) for i in range(60)), return_exceptions=True
        )
    limited = [r for r in results if isinstance(r, RateLimited)]
    assert len(results) - len(limited) >= 50  # the Starter burst
    assert limited, "60 simultaneous calls exceed the Starter burst of 50"
    assert all(r.retry_after >= 1 and r.status == 429 for r in limited)
    assert sandbox.endpoint("POST /v2/sms/send")["rate_limited"] == len(limited)


async def test_daily_quota_is_a_rate_limit_until_midnight(sandbox: Sandbox) -> None:
    async with PixabitsClient(sandbox.account(plan="starter"), sandbox.pixabits_url) as client:
        await client.send_sms(sms_batch(1_000))
        with pytest.raises(RateLimited, match="Daily limit") as caught:
            await client.send_sms(sms_batch(2, start=5_000))
        assert 1 <= caught.value.retry_after <= 86_400
        sandbox.advance_clock(caught.value.retry_after)
        assert (await client.send_sms(sms_batch(2, start=5_000))).accepted == 2


async def test_empty_wallet_is_insufficient_credits(sandbox: Sandbox) -> None:
    async with PixabitsClient(sandbox.account(credits=0.1), sandbox.pixabits_url) as client:
        with pytest.raises(InsufficientCredits) as caught:
            await client.send_sms(sms_batch(1))
    assert caught.value.status == 403
    assert sandbox.endpoint("POST /v2/sms/send")["messages"] == 0


async def test_503_is_transient_and_the_retry_goes_through(client: PixabitsClient, sandbox: Sandbox) -> None:
    sandbox.faults("/v2/sms/bulk", "503")
    with pytest.raises(TransientError) as caught:
        await client.send_sms(sms_batch(3))
    assert caught.value.status == 503
    assert (await client.send_sms(sms_batch(3))).accepted == 3
    assert sandbox.endpoint("POST /v2/sms/bulk")["recipients"] == {n: 1 for n in phones(3, FIRST)}


async def test_dropped_connection_after_acceptance_is_outcome_unknown(client: PixabitsClient, sandbox: Sandbox) -> None:
    sandbox.faults("/v2/sms/bulk", "drop")
    with pytest.raises(OutcomeUnknown) as caught:
        await client.send_sms(sms_batch(3))
    assert caught.value.status is None
    assert sandbox.endpoint("POST /v2/sms/bulk")["messages"] == 3  # the provider did accept them


async def test_a_request_left_unanswered_is_outcome_unknown(sandbox: Sandbox) -> None:
    sandbox.faults("/v2/sms/bulk", "hang")
    async with PixabitsClient(sandbox.account(), sandbox.pixabits_url, total_timeout=0.5) as client:
        with pytest.raises(OutcomeUnknown):
            await client.send_sms(sms_batch(2))


async def test_connection_refused_is_transient() -> None:
    async with PixabitsClient("key", "http://127.0.0.1:9") as client:
        with pytest.raises(TransientError, match="could not be sent"):
            await client.send_sms(sms_batch(2))
