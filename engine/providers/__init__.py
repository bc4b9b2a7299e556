"""The providers the engine sends through, each a client class that declares how it differs.

Everything that differs between providers lives with the provider: its URL and
JSON shapes, its limits per call, the words of its delivery reports, the
shape of its webhooks, whether it renders `#var#` itself, takes a
`notifyUrl`, offers an SMS fallback per call or is polled for reports (the
class facts of `engine.providers.base.Provider`). The rest of the engine
reads those facts through `client_class(name)`, never a provider's name.

Adding a provider means: one client module here (a `Provider` subclass that
sets the facts and implements the calls) added to `CLIENTS` below, its prices
in `config/prices.csv`, and its settings (`NAME_API_KEY`, `NAME_BASE_URL`, and
its plan) in `engine/settings.py`. To run it on the embedded sandbox (the
default base URL, and the tests), the sandbox must play it too: its API in
`engine/sandbox/`, its path in `engine/sandbox/server.PREFIXES`, and, where it
pushes to a webhook set in its dashboard, the sandbox's settings in
`engine/accounts.open_provider`. No other module knows a provider by name.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.errors import ConfigurationError
from engine.providers.base import Provider
from engine.providers.noxitel import NoxitelClient
from engine.providers.pixabits import PixabitsClient

#: Every provider, by name; the first is the default.
CLIENTS: dict[str, type[Provider]] = {client.name: client for client in (PixabitsClient, NoxitelClient)}
PROVIDERS: tuple[str, ...] = tuple(CLIENTS)


def client_class(name: str) -> type[Provider]:
    """The client class of provider `name`, whose class facts say how it differs."""
    try:
        return CLIENTS[name]
    except KeyError:
        raise ConfigurationError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDERS)}") from None


def names_where(fact: Callable[[type[Provider]], bool]) -> list[str]:
    """The providers whose class facts pass `fact`, for SQL over stored batches (`provider IN (...)`)."""
    return [name for name, client in CLIENTS.items() if fact(client)]
