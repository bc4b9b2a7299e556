"""No API key, and no full phone number, reaches a log line or an exception text."""

from __future__ import annotations

import logging
import traceback

import pytest
from aiohttp import web
from pydantic import SecretStr

from engine.providers import CLIENTS
from engine.providers.base import OutboundMessage, Provider, SmsBatch
from engine.providers.errors import ProviderError
from engine.providers.noxitel import NoxitelClient
from engine.providers.pixabits import PixabitsClient
from engine.redact import mask_address, mask_email, mask_phone
from engine.serve import serve
from engine.settings import Settings
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


@pytest.mark.parametrize("client_class", list(CLIENTS.values()), ids=list(CLIENTS))
async def test_an_api_key_echoed_by_the_provider_is_scrubbed_from_its_error(client_class: type[Provider]) -> None:
    """A provider or proxy that echoes the request's headers in its error put the key into stderr and the
    database; the client scrubs it from every answer as it reads it."""
    key = "live_key_0123456789abcdef"

    async def echo(request: web.Request) -> web.Response:
        echoed = f"bad request; headers were: {dict(request.headers)}"
        return web.json_response({"status": "error", "message": echoed, "code": echoed}, status=400)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    async with serve(app) as url:
        settings = Settings(pixabits_api_key=SecretStr(key), noxitel_api_key=SecretStr(key))
        client = client_class.from_settings(settings, base_url=url)
        try:
            with pytest.raises(ProviderError) as refused:
                await client.send_sms(SmsBatch("ACMEIN", [OutboundMessage("+919876543210", "Hi")]))
        finally:
            await client.aclose()
    assert key not in str(refused.value) and "[api key]" in str(refused.value)
