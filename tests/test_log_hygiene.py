"""No API key, and no full phone number, reaches a log line or an exception text."""

from __future__ import annotations

import logging
import traceback

import pytest

from engine.providers.base import OutboundMessage, SmsBatch
from engine.providers.errors import ProviderError
from engine.providers.noxitel import NoxitelClient
from engine.providers.pixabits import PixabitsClient
from engine.redact import mask_address, mask_email, mask_phone
from tests.fixtures.sandbox import Sandbox

PHONE = "+919876543210"


def test_masks_keep_enough_to_recognise_and_too_little_to_contact() -> None:
    assert mask_phone(PHONE) == "+91******3210"
    assert mask_email("jane.doe@example.com") == "j***@example.com"
    assert mask_address("919876543210") == "91******3210"


async def test_failures_never_log_or_raise_the_key_or_the_number(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = sandbox.account()
    batch = SmsBatch("ACMEIN", [OutboundMessage(PHONE, "Hi"), OutboundMessage("+919876543211", "Hi")])
    errors: list[ProviderError] = []
    for path, fault in (
        ("/v2/sms/bulk", "503"),
        ("/v2/sms/bulk", "drop"),
        ("/api/v2/sms", "500"),
        ("/api/v2/sms", "drop"),
        ("/api/v2/sms", "429"),
    ):
        sandbox.faults(path, fault)
        client_type = NoxitelClient if path.startswith("/api") else PixabitsClient
        base = sandbox.noxitel_url if path.startswith("/api") else sandbox.pixabits_url
        async with client_type(key, base) as client:
            try:
                await client.send_sms(batch)
            except ProviderError as exc:
                errors.append(exc)
    async with PixabitsClient(key, "http://127.0.0.1:9") as unreachable:
        try:
            await unreachable.send_sms(batch)
        except ProviderError as exc:
            errors.append(exc)
    assert len(errors) == 6
    texts = [caplog.text] + [
        "".join(traceback.format_exception(e)) + repr(e) + repr(e.__cause__) + repr(e.__context__) for e in errors
    ]
    for text in texts:
        assert key not in text
        assert PHONE not in text and PHONE[1:] not in text
