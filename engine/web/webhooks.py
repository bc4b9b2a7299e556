"""Receiving the providers' pushed events: signature first, then parsing, then whoever listens.

Every body must carry `X-Signature`, the hex HMAC-SHA256 of the raw body under
the shared secret (an optional `sha256=` prefix is accepted), compared in
constant time; a missing or wrong signature is a 401 and nothing is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from engine.providers import CLIENTS
from engine.providers.base import Provider, WebhookEvent

log = logging.getLogger(__name__)

Listener = Callable[[str, list[WebhookEvent]], Awaitable[None]]
#: What reads a provider's pushes: its client class (or a client, whose class it is).
Parsers = Mapping[str, type[Provider] | Provider]
PROVIDERS: web.AppKey[Parsers] = web.AppKey("providers")
SECRET: web.AppKey[bytes] = web.AppKey("secret")
LISTENER: web.AppKey[Listener] = web.AppKey("listener")
#: Path of each receiver, and the provider whose parser reads it.
ROUTES = {path: name for name, client in CLIENTS.items() for path in client.webhook_paths}


def signed(secret: bytes, body: bytes, signature: str) -> bool:
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    given = signature.strip().lower().removeprefix("sha256=").encode("ascii", "replace")
    return hmac.compare_digest(expected, given)


async def receive(request: web.Request) -> web.Response:
    body = await request.read()
    if not signed(request.app[SECRET], body, request.headers.get("X-Signature", "")):
        log.warning("refused a webhook on %s: bad or missing signature", request.path)
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


def build_app(secret: str, providers: Parsers, listener: Listener) -> web.Application:
    """The receiver of these providers' pushes: a POST route for each of their webhook paths."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[SECRET] = secret.encode()
    app[PROVIDERS] = providers
    app[LISTENER] = listener
    for path, name in ROUTES.items():
        if name in providers:
            app.router.add_post(path, receive)
    return app
