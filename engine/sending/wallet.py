"""Reading each provider's balance on a timer, to warn before a campaign pauses for want of credits.

A 402 pauses a campaign mid-way; a warning an hour earlier lets someone top up
first. The measure is credits where the provider reports them (Noxitel bills
SMS in route credits), else the wallet's money. Only figures are logged: never
a key, and a provider error is logged by its message, which carries none.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from engine.providers.base import Balance, Provider
from engine.providers.errors import ProviderError
from engine.sending.throttle import Throttle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WalletReading:
    provider: str
    balance: Balance | None
    low: bool
    error: str | None = None

    @property
    def left(self) -> float | None:
        """What is compared with the threshold: credits if reported, else money."""
        if self.balance is None:
            return None
        return self.balance.credits if self.balance.credits is not None else self.balance.amount


async def check_wallets(
    providers: Mapping[str, Provider], throttles: Mapping[str, Throttle], warn_below: float
) -> list[WalletReading]:
    """Ask every provider its balance (under the account's throttle) and warn of those under `warn_below`."""
    readings = []
    for name, provider in providers.items():
        try:
            await throttles[name].acquire()
            balance = await provider.balance()
        except ProviderError as exc:
            log.warning("the %s balance could not be read: %s", name, exc)
            readings.append(WalletReading(name, None, low=False, error=str(exc)))
            continue
        left = balance.credits if balance.credits is not None else balance.amount
        unit = "credits" if balance.credits is not None else balance.currency
        if left < warn_below:
            log.warning(
                "the %s balance is low: %.2f %s left (CAMPAIGN_WALLET_WARN_BELOW is %.2f); top up before "
                "campaigns pause for want of credits",
                name,
                left,
                unit,
                warn_below,
            )
        else:
            log.info("the %s balance: %.2f %s", name, left, unit)
        readings.append(WalletReading(name, balance, low=left < warn_below))
    return readings
