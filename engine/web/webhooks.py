"""Receiving the providers' pushed events: signature first, then parsing, then whoever listens.

Every body must carry `X-Signature`, the hex HMAC-SHA256 of the raw body under
the shared secret (an optional `sha256=` prefix is accepted), compared in
constant time; a missing or wrong signature is a 401 and nothing is kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from engine.errors import ConfigurationError
from engine.providers import CLIENTS
from engine.providers.base import Provider, WebhookEvent
from engine.settings import WEBHOOK_MAX_KB, WEBHOOK_READ_SECONDS, Settings

log = logging.getLogger(__name__)

Listener = Callable[[str, list[WebhookEvent]], Awaitable[None]]
#: What reads a provider's pushes: its client class (or a client, whose class it is).
Parsers = Mapping[str, type[Provider] | Provider]
PROVIDERS: web.AppKey[Parsers] = web.AppKey("providers")
SECRET: web.AppKey[bytes] = web.AppKey("secret")
LIMITS: web.AppKey[Limits] = web.AppKey("limits")
REFUSALS: web.AppKey[Refusals] = web.AppKey("refusals")
LISTENER: web.AppKey[Listener] = web.AppKey("listener")
#: The shortest webhook secret the receiver starts with.
MIN_SECRET_CHARS = 32
#: Path of each receiver, and the provider whose parser reads it.
ROUTES = {path: name for name, client in CLIENTS.items() for path in client.webhook_paths}


def signed(secret: bytes, body: bytes, signature: str) -> bool:
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    given = signature.strip().lower().removeprefix("sha256=").encode("ascii", "replace")
    return hmac.compare_digest(expected, given)


@dataclass(frozen=True)
class Limits:
    """What one push may cost a receiver that anyone can reach: its body's size, and how long sending it
    may take (`CAMPAIGN_WEBHOOK_MAX_KB`, `CAMPAIGN_WEBHOOK_READ_SECONDS`)."""

    max_bytes: int = int(WEBHOOK_MAX_KB * 1024)
    read_seconds: float = WEBHOOK_READ_SECONDS

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(int(settings.webhook_max_kb * 1024), settings.webhook_read_seconds)

    def serving(self) -> dict[str, float]:
        """Options for the server: a connection that has not sent a whole request within `read_seconds` (slow
        headers, or idle after its last answer) is closed. aiohttp's keep-alive timer runs from the connection's
        start and until a request's headers are complete, so it bounds the headers as well as idle time."""
        return {"keepalive_timeout": self.read_seconds}


def signing_secret(settings: Settings) -> str:
    """The secret pushes are signed with, long enough that it cannot be guessed by trying."""
    if settings.webhook_secret is None:
        raise ConfigurationError("set CAMPAIGN_WEBHOOK_SECRET: the receiver only takes events signed with it")
    secret = settings.webhook_secret.get_secret_value()
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigurationError(
            f"CAMPAIGN_WEBHOOK_SECRET has {len(secret)} characters; use at least {MIN_SECRET_CHARS} "
            "(for one: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return secret


class Refusals:
    """Refused pushes are logged once, then at most a line a minute with how many came meanwhile, so that a
    stranger's flood of bad signatures cannot flood the log."""

    EVERY = 60.0

    def __init__(self) -> None:
        self.count = 0
        self.since = -self.EVERY

    def note(self, path: str) -> None:
        self.count += 1
        moment = time.monotonic()
        if moment - self.since >= self.EVERY:
            log.warning("refused %d webhook(s) with a bad or missing signature, the last on %s", self.count, path)
            self.count, self.since = 0, moment


async def receive(request: web.Request) -> web.Response:
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    if not signed(request.app[SECRET], body, request.headers.get("X-Signature", "")):
        request.app[REFUSALS].note(request.path)
        return web.json_response({"error": "invalid signature"}, status=401)
    name = ROUTES[request.path]
    try:
        events = request.app[PROVIDERS][name].parse_webhook(body)
    except KeyError as exc:
        return web.json_response({"error": f"unreadable event: {exc.args[0]} is missing"}, status=400)
    except (TypeError, ValueError) as exc:  # orjson's decode errors are ValueErrors too
        return web.json_response({"error": f"unreadable event: {exc}"}, status=400)
    await request.app[LISTENER](name, events)
    return web.json_response({"received": len(events)})


async def _body(request: web.Request) -> bytes | web.Response:
    """The raw body as it was signed, or the answer that refuses it: compressed (it would be inflated before
    the signature is checked), larger than the limit, or not sent within the time."""
    limits = request.app[LIMITS]
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return web.json_response({"error": "compressed bodies are not taken: send the body as it is"}, status=415)
    if request.content_length is not None and request.content_length > limits.max_bytes:
        return web.json_response({"error": f"the body is larger than {limits.max_bytes:,} bytes"}, status=413)
    try:
        async with asyncio.timeout(limits.read_seconds):
            return await request.read()
    except TimeoutError:
        return web.json_response({"error": f"the body did not come within {limits.read_seconds:g} s"}, status=408)


def build_app(secret: str, providers: Parsers, listener: Listener, limits: Limits | None = None) -> web.Application:
    """The receiver of these providers' pushes: a POST route for each of their webhook paths."""
    limits = limits or Limits()
    app = web.Application(client_max_size=limits.max_bytes)
    app[LIMITS] = limits
    app[REFUSALS] = Refusals()
    app[SECRET] = secret.encode()
    app[PROVIDERS] = providers
    app[LISTENER] = listener
    for path, name in ROUTES.items():
        if name in providers:
            app.router.add_post(path, receive)
    return app
