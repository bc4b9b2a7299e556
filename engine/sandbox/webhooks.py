"""Pushes delivery events once messages settle, signed as the engine's receiver expects.

Pixabits events go to the dashboard-configured `webhook_url`; Noxitel events go
to each request's `notifyUrl`. Each body is signed with `X-Signature`: the hex
HMAC-SHA256 of the raw body under `webhook_secret` (neither reference names a
scheme; this one is the engine's). Events are built when due, from the same
deterministic fates the polling endpoints report, so push and pull agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import hmac
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from engine.sandbox import noxitel_api
from engine.sandbox.outcomes import fate, rcs_capable
from engine.sandbox.state import SandboxState, Send

log = logging.getLogger(__name__)

PUSH_ATTEMPTS = 3
PUSH_CONCURRENCY = 32


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def pixabits_events(state: SandboxState, send: Send) -> Iterator[dict[str, Any]]:
    config = state.config
    at = _iso(send.accepted_at + config.dlr_delay)
    for index, to in enumerate(send.addresses):
        message_id = send.message_id(index)
        key = to.lstrip("+")
        outcome = "rejected" if send.dlt_missing and to.startswith("+91") else fate(config, key)
        data: dict[str, Any] = {"message_id": message_id, "to": to}
        if send.channel == "sms":
            if outcome == "delivered":
                yield {
                    "event": "sms.message.delivered",
                    "timestamp": at,
                    "data": {**data, "status": "delivered", "delivered_at": at},
                }
            else:
                error = {"failed": "UNDELIV", "expired": "EXPIRED", "rejected": "DLT_TEMPLATE_NOT_REGISTERED"}[outcome]
                yield {
                    "event": "sms.message.failed",
                    "timestamp": at,
                    "data": {**data, "status": outcome, "error": error, "failed_at": at},
                }
        elif send.channel == "email":
            if outcome == "delivered":
                yield {"event": "email.delivered", "timestamp": at, "data": {**data, "status": "delivered"}}
            else:
                bounce = "hard" if outcome == "failed" else "soft"
                yield {
                    "event": "email.bounced",
                    "timestamp": at,
                    "data": {**data, "status": "bounced", "bounce_type": bounce},
                }
        elif send.channel == "rcs":
            if not rcs_capable(config, key):
                if send.fallback:
                    yield {
                        "event": "rcs.fallback.triggered",
                        "timestamp": at,
                        "data": {
                            **data,
                            "status": "fallback",
                            "fallback_channel": "sms",
                            "reason": "device does not support RCS",
                        },
                    }
            elif outcome == "delivered":
                yield {"event": "rcs.message.delivered", "timestamp": at, "data": {**data, "status": "delivered"}}
        elif send.channel == "whatsapp" and outcome == "delivered":
            yield {"event": "wa.message.delivered", "timestamp": at, "data": {**data, "status": "delivered"}}


def noxitel_events(state: SandboxState, send: Send) -> Iterator[dict[str, Any]]:
    for index in range(len(send.addresses)):
        if send.channel == "sms":
            row = noxitel_api.sms_dlr_row(state, send, index)
            yield {
                "batch_id": send.batch_id,
                "sms_id": send.message_id(index),
                "mobile": row["mobile"],
                "dlr": row["dlr"],
            }
        elif send.channel == "rcs":
            status, at = noxitel_api.rcs_status(state, send, index)
            event = {"delivered": "message.delivered", "read": "message.read"}.get(status, "message.failed")
            yield {
                "event": event,
                "agentId": str(send.meta.get("agent_id") or ""),
                "msgId": send.message_id(index),
                "mobile": send.addresses[index][1:],
                "status": status,
                "timestamp": _iso(at or state.clock.time()),
            }


class Pusher:
    """Delivers settled messages' events in the background, a bounded number at a time."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._due: list[tuple[float, int, str]] = []
        self._order = 0
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._pending: set[asyncio.Task[None]] = set()
        self._generation = 0

    def schedule(self, send: Send) -> None:
        if send.provider == "noxitel" and not send.notify_url:
            return
        self._order += 1
        heapq.heappush(self._due, (send.accepted_at + self.state.config.dlr_delay, self._order, send.token))
        self._wake.set()

    def clear(self) -> None:
        """Forget every push not yet made (a sandbox reset): queued sends and those being pushed."""
        self._due.clear()
        self._generation += 1
        for task in self._pending:
            task.cancel()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._task = asyncio.create_task(self._run(), name="sandbox-webhooks")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.clear()
        await asyncio.gather(*self._pending, return_exceptions=True)
        if self._session:
            await self._session.close()

    async def _run(self) -> None:
        semaphore = asyncio.Semaphore(PUSH_CONCURRENCY)
        while True:
            now = self.state.clock.time()
            generation = self._generation
            while self._due and self._due[0][0] <= now:
                _, _, token = heapq.heappop(self._due)
                send = self.state.sends.get(token)
                if send is None:
                    continue
                for url, body in self._targets(send):
                    await semaphore.acquire()
                    if generation != self._generation:  # reset while waiting: these events are void
                        semaphore.release()
                        break
                    task = asyncio.create_task(self._post(url, body))
                    self._pending.add(task)
                    task.add_done_callback(self._pending.discard)
                    task.add_done_callback(lambda _: semaphore.release())
            self._wake.clear()
            # Wake at the next due time, but at least every 0.1 s: the clock can be moved forward.
            delay = min(0.1, self._due[0][0] - now) if self._due else 0.1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, delay))

    def _targets(self, send: Send) -> Iterator[tuple[str, bytes]]:
        if send.provider == "pixabits":
            url = self.state.config.webhook_url
            events = pixabits_events(self.state, send) if url else iter(())
        else:
            url = send.notify_url
            events = noxitel_events(self.state, send)
        for event in events:
            yield url or "", orjson.dumps(event)

    async def _post(self, url: str, body: bytes) -> None:
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        secret = self.state.config.webhook_secret
        if secret:
            headers["X-Signature"] = sign(secret, body)
        stats = self.state.endpoint("WEBHOOK " + url)
        for attempt in range(PUSH_ATTEMPTS):
            stats.requests += 1
            try:
                async with self._session.post(url, data=body, headers=headers) as response:
                    stats.statuses[response.status] += 1
                    if response.status < 500:
                        stats.messages += 1
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                stats.statuses[0] += 1
                log.debug("webhook push failed (%s)", type(exc).__name__)
            if attempt + 1 < PUSH_ATTEMPTS:
                await asyncio.sleep(0.2 * 2**attempt)
