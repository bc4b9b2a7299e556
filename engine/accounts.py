"""Every "provider name x settings" fact: which key, base URL, plan and webhook each account uses.

`open_provider` is the one way the engine gets a client.

A base URL of `sandbox` (the default) starts the embedded sandbox on the
current event loop and points the client at it, so a new machine runs whole
campaigns with no account and nothing reaches a paid service by accident.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp

from engine.errors import ConfigurationError
from engine.providers import PROVIDERS, client_class
from engine.providers.base import Provider
from engine.providers.limits import RatePlan
from engine.providers.pixabits import PixabitsClient
from engine.settings import SANDBOX, Settings


def make_provider(
    name: str, settings: Settings, session: aiohttp.ClientSession | None = None, base_url: str | None = None
) -> Provider:
    """A client for `name` configured from settings (`base_url` overrides the configured one)."""
    return client_class(name).from_settings(settings, session, base_url)


def plan_of(provider: str, settings: Settings) -> RatePlan:
    """The account's rate plan: request rate, burst and daily quota."""
    return client_class(provider).rate_plan(settings)


def api_key_of(provider: str, settings: Settings) -> str:
    return client_class(provider).configured_key(settings)


def notify_url(provider: str, settings: Settings) -> str | None:
    """Where a provider that takes a per-call `notifyUrl` should push reports: the webhook receiver under
    `CAMPAIGN_PUBLIC_URL`, if providers can reach it."""
    client = client_class(provider)
    if not (client.takes_notify_url and settings.public_url):
        return None
    return settings.public_url.rstrip("/") + client.webhook_paths[0]


def uses_sandbox(name: str, settings: Settings) -> bool:
    return client_class(name).configured_url(settings) == SANDBOX


def require_services(settings: Settings) -> None:
    """Refuse the embedded sandbox where workers must share one provider (it lives and dies with one process)."""
    for name in PROVIDERS:
        if uses_sandbox(name, settings):
            variable = f"{name.upper()}_BASE_URL"
            raise ConfigurationError(
                f"{variable} is 'sandbox', which only works in local mode: with CAMPAIGN_BROKER_URL set, "
                f"workers share one provider, so run `campaign sandbox` and point {variable} at it"
            )


@contextlib.asynccontextmanager
async def open_provider(
    name: str,
    settings: Settings,
    session: aiohttp.ClientSession | None = None,
    sandbox_webhooks: tuple[str, str] | None = None,
) -> AsyncIterator[Provider]:
    """A ready client for `name`, with the embedded sandbox running for as long as it is open if configured.

    `sandbox_webhooks` (url, secret) is where the embedded sandbox pushes its
    Pixabits events, as the dashboard setting would; by default the webhook
    receiver under `CAMPAIGN_PUBLIC_URL`, if set.
    """
    async with contextlib.AsyncExitStack() as stack:
        base_url = None
        if uses_sandbox(name, settings):
            from engine.sandbox.config import SandboxConfig
            from engine.sandbox.server import provider_url, serve

            key = api_key_of(name, settings)
            secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
            public = settings.public_url.rstrip("/") if settings.public_url else None
            webhook_url = f"{public}{PixabitsClient.webhook_paths[0]}" if public else None
            if sandbox_webhooks is not None:
                webhook_url, secret = sandbox_webhooks
            config = SandboxConfig(
                api_keys=(key,),
                plan=settings.pixabits_plan,
                noxitel_rate=settings.noxitel_rate,
                webhook_secret=secret,
                webhook_url=webhook_url,
                max_sms_parts=settings.max_sms_parts,
            )
            url = await stack.enter_async_context(serve(config))
            base_url = provider_url(url, name)
        provider = make_provider(name, settings, session, base_url)
        stack.push_async_callback(provider.aclose)
        yield provider
