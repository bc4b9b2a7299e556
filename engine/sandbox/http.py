"""Small pieces every sandbox handler uses: JSON in and out, and refusals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

#: Typed keys for what the server keeps on the app and on each request.
STATE: web.AppKey[Any] = web.AppKey("state")
PUSHER: web.AppKey[Any] = web.AppKey("pusher")
FAULTS: web.AppKey[Any] = web.AppKey("faults")
INITIAL_CONFIG: web.AppKey[Any] = web.AppKey("initial_config")
ACCOUNT: web.RequestKey[Any] = web.RequestKey("account")
ENDPOINT: web.RequestKey[str] = web.RequestKey("endpoint")
ACCEPTED: web.RequestKey[Any] = web.RequestKey("accepted")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")


class Reject(Exception):
    """Answer the request with `status` and a JSON `body` (the provider's error shape)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers


async def read_json(request: web.Request, error: Any) -> Any:
    """The request's JSON body; `error(message)` builds the provider's 400 answer for a bad one.

    Noxitel's `/dlr` is a GET with a JSON body, so bodies are read whatever the method.
    """
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise Reject(400, error("Request body is not valid JSON")) from None
    if ENDPOINT in request:
        request.app[STATE].remember_body(request[ENDPOINT], body)
    return body


def accept(request: web.Request, addresses: Sequence[str]) -> None:
    """Tell the gate which recipients this request delivered, for the stats."""
    request[ACCEPTED] = addresses
