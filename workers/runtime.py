"""One event loop, one HTTP session and one database engine per worker process.

Celery tasks are synchronous, and the provider clients are asyncio. Creating a
loop per task (`asyncio.run`) would also need a new aiohttp session and Redis
connection each time, and pooled objects bound to a closed loop fail with
"attached to a different loop". So each worker process builds its loop and the
objects bound to it once (at `worker_process_init`, or on first use in a solo
worker) and runs every task's coroutine on it; `worker_process_shutdown` closes
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery import signals
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from sqlalchemy import Engine

from engine.accounts import make_provider, require_services
from engine.providers import PROVIDERS
from engine.providers.base import new_session
from engine.sending.dispatch import Sender
from engine.sending.senders import make_sender
from engine.settings import Settings, get_settings
from engine.store.db import open_database

T = TypeVar("T")


class Runtime:
    """What a worker process keeps between tasks."""

    current: Runtime | None = None

    def __init__(self, settings: Settings) -> None:
        require_services(settings)
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.engine: Engine = open_database(settings.database_url)
        self.bells = SyncRedis.from_url(settings.broker_url or "")
        self.sender = self.loop.run_until_complete(self._sender())

    async def _sender(self) -> Sender:
        settings = self.settings
        self.session = new_session(settings.http_connect_timeout, settings.http_total_timeout)
        self.redis = Redis.from_url(settings.broker_url or "")
        providers = {name: make_provider(name, settings, self.session) for name in PROVIDERS}
        return make_sender(self.engine, settings, providers, f"{socket.gethostname()}:{os.getpid()}", self.redis)

    def bell_key(self, batch_id: int) -> str:
        return f"{self.settings.broker_prefix}doorbell:{batch_id}"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a task's coroutine to its end; if the task is interrupted (a time limit), stop it too."""
        task = self.loop.create_task(coroutine)
        try:
            return self.loop.run_until_complete(task)
        except BaseException:
            task.cancel()
            with contextlib.suppress(BaseException):
                self.loop.run_until_complete(task)
            raise

    def close(self) -> None:
        async def close_async() -> None:
            await self.session.close()
            await self.redis.aclose()

        self.loop.run_until_complete(close_async())
        self.loop.close()
        self.bells.close()
        self.engine.dispose()

    @classmethod
    def get(cls) -> Runtime:
        if cls.current is None:
            cls.current = Runtime(get_settings())
        return cls.current


@signals.worker_process_init.connect
def _start_process(**_: Any) -> None:
    Runtime.get()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _stop_process(**_: Any) -> None:
    if Runtime.current is not None:
        Runtime.current.close()
        Runtime.current = None
