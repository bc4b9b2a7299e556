"""The sandbox server: both providers on one port, a gate that plays their limits and faults,
and `/_sandbox/*` endpoints for tests and benchmarks.

The `/_sandbox/*` endpoints can change accounts, script pushed events and read
back every number and text sent, so each of them (but the health check) wants
the control token in `Authorization: Bearer`; a sandbox without one refuses
them all.

Every provider request passes the gate in the order a real service applies its
rules: count it, add latency, authenticate, rate-limit per key, maybe fail with
a 5xx (the provider did not act), run the endpoint, and maybe drop the
connection after accepting (the provider acted but the client never hears).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import random
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from engine.errors import ConfigurationError
from engine.providers.limits import PIXABITS_PLANS
from engine.redact import mask_secret
from engine.sandbox import noxitel_api, pixabits_api
from engine.sandbox.config import SandboxConfig
from engine.sandbox.http import (
    ACCEPTED,
    ACCOUNT,
    ENDPOINT,
    FAULTS,
    INITIAL_CONFIG,
    PUSHER,
    STATE,
    Reject,
    json_response,
    read_json,
)
from engine.sandbox.state import Account, RateWindow, SandboxState
from engine.sandbox.webhooks import Pusher
from engine.serve import run_until_stopped
from engine.serve import serve as serving

NOXITEL_PREFIX = "/api/v2"
#: Where each provider's API sits under the sandbox's one address.
PREFIXES = {"pixabits": "", "noxitel": NOXITEL_PREFIX}


def provider_url(root: str, provider: str) -> str:
    """The base URL a client of `provider` uses for a sandbox served at `root`."""
    return root + PREFIXES[provider]


#: Control paths that answer without the token: a liveness probe reveals nothing.
OPEN_CONTROLS = frozenset({"/_sandbox/health"})
CONTROL_SCHEME = 'Bearer realm="sandbox control"'

HANG_SECONDS = 600.0
MAX_BODY = 256 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Faults:
    """Scripted faults (a queue of actions per path, consumed in order) and seeded random ones."""

    BEFORE = frozenset({"429"})
    AFTER = frozenset({"drop", "hang"})

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.scripted: dict[str, deque[str]] = {}

    def add(self, path: str, actions: list[str]) -> None:
        for action in actions:
            if action not in self.BEFORE | self.AFTER and not (action.isdigit() and 500 <= int(action) < 600):
                raise ConfigurationError(f"unknown fault {action!r}: use a 5xx status, 429, drop or hang")
        self.scripted.setdefault(path, deque()).extend(actions)

    def next_scripted(self, path: str) -> str | None:
        for key in (path, "*"):
            queue = self.scripted.get(key)
            if queue:
                return queue.popleft()
        return None


def _provider_of(path: str) -> str:
    return "noxitel" if path.startswith(NOXITEL_PREFIX) else "pixabits"


def _error_body(provider: str, status: int, message: str) -> dict[str, Any]:
    if provider == "noxitel":
        return noxitel_api.error_body(status, message)
    return pixabits_api.error_body(status, message)


def _authenticate(request: web.Request, state: SandboxState, provider: str) -> Account:
    """Noxitel: 401 for an IP off the allow-list, 403 for a missing or wrong key. Pixabits: 401 for either."""
    config = state.config
    if provider == "noxitel" and config.allowed_ips and request.remote not in config.allowed_ips:
        raise Reject(401, _error_body(provider, 401, "IP not whitelisted"))
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() == "bearer" and key in config.api_keys:
        return state.account(provider, key)
    if provider == "pixabits":
        raise Reject(401, _error_body(provider, 401, "Missing or invalid API key"))
    raise Reject(403, _error_body(provider, 403, "Invalid API Key" if key else "API Key Missing"))


def _control_refusal(request: web.Request, token: str | None) -> web.Response | None:
    """Why a `/_sandbox/*` request is refused (401), or None when it carries the control token."""
    if request.path in OPEN_CONTROLS:
        return None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    if token is None:
        problem = "this sandbox was started without a control token, so its /_sandbox/* endpoints are closed"
    elif scheme.lower() != "bearer" or not given:
        problem = "missing control token: send Authorization: Bearer <SANDBOX_CONTROL_TOKEN>"
    elif not hmac.compare_digest(given.encode(), token.encode()):
        problem = "wrong control token"
    else:
        return None
    return json_response({"error": problem}, 401, {"WWW-Authenticate": CONTROL_SCHEME})


@web.middleware
async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/_sandbox"):
        refusal = _control_refusal(request, request.app[STATE].config.control_token)
        return refusal or await handler(request)
    state: SandboxState = request.app[STATE]
    faults: Faults = request.app[FAULTS]
    config = state.config
    provider = _provider_of(request.path)
    resource = request.match_info.route.resource
    name = f"{request.method} {resource.canonical}" if resource is not None else "UNMATCHED"
    stats = state.endpoint(name)
    now = time.monotonic()
    stats.requests += 1
    stats.window.hit(now)
    after: str | None = None
    try:
        if resource is None:
            raise Reject(404, _error_body(provider, 404, f"No endpoint {request.method} {request.path}"))
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        account = _authenticate(request, state, provider)
        state.account_windows.setdefault(f"{provider}:{account.key}", RateWindow()).hit(now)
        wait = account.bucket.take(state.stalls.total)
        scripted = None if wait else faults.next_scripted(request.path)
        if scripted == "429":
            wait = 1.0
        if wait:
            stats.rate_limited += 1
            raise Reject(
                429, _error_body(provider, 429, "Rate limit exceeded"), {"Retry-After": str(max(1, math.ceil(wait)))}
            )
        if scripted and scripted.isdigit():
            raise Reject(int(scripted), _error_body(provider, int(scripted), "Temporary outage, retry with backoff"))
        if config.fault_5xx_share and faults.rng.random() < config.fault_5xx_share:
            status = 500 if provider == "noxitel" else 503
            raise Reject(status, _error_body(provider, status, "Temporary outage, retry with backoff"))
        if scripted in Faults.AFTER:
            after = scripted
        elif config.fault_drop_share and faults.rng.random() < config.fault_drop_share:
            after = "drop"
        request[ACCOUNT] = account
        request[ENDPOINT] = name
        response = await handler(request)
    except Reject as reject:
        response = json_response(reject.body, reject.status, reject.headers)
    except web.HTTPException as exc:
        response = json_response(_error_body(provider, exc.status, exc.reason), exc.status)
    stats.statuses[response.status] += 1
    accepted = request.get(ACCEPTED)
    if accepted is not None and response.status < 300:
        stats.accepted_requests += 1
        stats.messages += len(accepted)
        stats.recipients.update(accepted)
        if after == "drop":
            # Accepted, but the answer never leaves: the client sees the connection close.
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if after == "hang":
            await asyncio.sleep(HANG_SECONDS)
    return response


async def _stats(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    return json_response(state.stats(with_recipients=request.query.get("recipients", "1") != "0"))


async def _reset(request: web.Request) -> web.Response:
    """Forget everything and return to the configuration the sandbox started with."""
    state: SandboxState = request.app[STATE]
    state.config = request.app[INITIAL_CONFIG]
    state.clock.offset = 0.0
    state.reset()
    request.app[FAULTS].rng.seed(state.config.seed)
    request.app[PUSHER].clear()
    request.app[FAULTS].scripted.clear()
    return json_response({"status": "reset"})


def _config_view(config: SandboxConfig) -> dict[str, Any]:
    view = asdict(config)
    view["api_keys"] = len(config.api_keys)
    view["key_plans"] = {mask_secret(key): plan for key, plan in config.key_plans.items()}
    view["webhook_secret"] = bool(config.webhook_secret)
    view["control_token"] = bool(config.control_token)
    return view


#: Settings that shape an account: changing one gives every account fresh terms.
ACCOUNT_TERMS = {"plan", "noxitel_rate", "credits", "key_plans"}


async def _config(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    if request.method == "POST":
        changes = await read_json(request, lambda m: {"error": m})
        try:
            state.config = state.config.updated(dict(changes))
        except (ConfigurationError, TypeError) as exc:
            return json_response({"error": str(exc)}, 400)
        if ACCOUNT_TERMS & set(changes):
            state.accounts.clear()
        request.app[FAULTS].rng.seed(state.config.seed)
    return json_response(_config_view(state.config))


async def _faults(request: web.Request) -> web.Response:
    body = await read_json(request, lambda m: {"error": m})
    try:
        request.app[FAULTS].add(str(body.get("path", "*")), list(body.get("actions", [])))
    except ConfigurationError as exc:
        return json_response({"error": str(exc)}, 400)
    return json_response({k: list(v) for k, v in request.app[FAULTS].scripted.items()})


async def _accounts(request: web.Request) -> web.Response:
    """Add an account, or reset one to fresh terms: `{"api_key", "plan"?, "credits"?}`, for both providers."""
    state: SandboxState = request.app[STATE]
    body = await read_json(request, lambda m: {"error": m})
    key = body.get("api_key")
    if not isinstance(key, str) or not key:
        return json_response({"error": "api_key is required"}, 400)
    plan = str(body.get("plan", state.config.plan_for(key))).lower()
    if plan not in PIXABITS_PLANS:
        return json_response({"error": f"unknown plan {plan!r}"}, 400)
    keys = state.config.api_keys if key in state.config.api_keys else (*state.config.api_keys, key)
    state.config = state.config.updated({"api_keys": keys, "key_plans": {**state.config.key_plans, key: plan}})
    for provider in ("pixabits", "noxitel"):
        state.accounts.pop((provider, key), None)
        account = state.account(provider, key)
        if "credits" in body:
            account.credits = float(body["credits"])
    return json_response({"api_key": key, "plan": plan})


async def _clock(request: web.Request) -> web.Response:
    """Move the sandbox's wall clock: `{"advance": seconds}` or `{"offset": seconds}`."""
    state: SandboxState = request.app[STATE]
    body = await read_json(request, lambda m: {"error": m})
    if "offset" in body:
        state.clock.offset = float(body["offset"])
    state.clock.offset += float(body.get("advance", 0.0))
    return json_response({"offset": state.clock.offset, "now": state.clock.now().isoformat()})


async def _requests(request: web.Request) -> web.Response:
    """The last request bodies of one endpoint (`?endpoint=POST /api/v2/sms`)."""
    state: SandboxState = request.app[STATE]
    return json_response(list(state.bodies.get(request.query.get("endpoint", ""), ())))


async def _otp(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    code = state.otps.get(request.match_info["reference"])
    return json_response({"otp": code}, 200 if code else 404)


async def _health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def build_app(config: SandboxConfig) -> web.Application:
    app = web.Application(middlewares=[gate], client_max_size=MAX_BODY)
    state = SandboxState(config)
    app[STATE] = state
    app[INITIAL_CONFIG] = config
    app[PUSHER] = Pusher(state)
    app[FAULTS] = Faults(config.seed)
    app.add_routes(pixabits_api.routes())
    app.add_routes(noxitel_api.routes(NOXITEL_PREFIX))
    app.add_routes(
        [
            web.get("/_sandbox/health", _health),
            web.get("/_sandbox/stats", _stats),
            web.post("/_sandbox/reset", _reset),
            web.get("/_sandbox/config", _config),
            web.post("/_sandbox/config", _config),
            web.post("/_sandbox/faults", _faults),
            web.post("/_sandbox/accounts", _accounts),
            web.post("/_sandbox/clock", _clock),
            web.get("/_sandbox/requests", _requests),
            web.get("/_sandbox/otp/{reference}", _otp),
        ]
    )

    async def start_pusher(app: web.Application) -> None:
        await app[PUSHER].start()

    async def stop_pusher(app: web.Application) -> None:
        await app[PUSHER].stop()

    app.on_startup.append(start_pusher)
    app.on_cleanup.append(stop_pusher)
    app.cleanup_ctx.append(_measuring_stalls)
    return app


async def _measuring_stalls(app: web.Application) -> AsyncIterator[None]:
    """The stall meter runs for as long as the app serves (see `Stalls`)."""
    task = asyncio.create_task(app[STATE].stalls.measure())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


#: How the sandbox is served: a hung request ends when its client gives up, and shutdown does not wait on it.
SERVING: dict[str, Any] = {"handler_cancellation": True, "shutdown_timeout": 1.0, "backlog": 1024}


@contextlib.asynccontextmanager
async def serve(config: SandboxConfig, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run the sandbox on the current event loop; yields its base URL (Pixabits root)."""
    async with serving(build_app(config), host, port, **SERVING) as url:
        yield url


def run_forever(config: SandboxConfig, host: str, port: int, show_token: bool = False) -> None:
    """The `campaign sandbox` command: serve until SIGINT or SIGTERM; `show_token` prints the control token
    (one the command made up, which nobody else knows) once, after the line saying where it listens."""

    def started(url: str) -> None:
        print(f"Sandbox listening on {url}  (Pixabits: {url}  Noxitel: {url}{NOXITEL_PREFIX})", flush=True)
        if show_token:
            print(f"Control token for {url}/_sandbox/*: {config.control_token}", flush=True)

    run_until_stopped(lambda: build_app(config), host, port, started, **SERVING)
    print("Sandbox stopped", file=sys.stderr, flush=True)
