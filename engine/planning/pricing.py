"""What a campaign will cost, from the price table in `config/prices.csv`.

Prices are per SMS segment (operators bill each part of a long message) or per
message for the other channels, in the currency the provider's wallet uses, so
the estimate can be held against the balance the provider reports. The table
is configuration: a contract with other rates replaces the file, not the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from engine.errors import CampaignError
from engine.planning.contacts import ContactsError, read_contacts


class PricingError(CampaignError):
    """The price table is missing a price the plan needs, or cannot be read."""


@dataclass(frozen=True, slots=True)
class Price:
    provider: str
    channel: str
    encoding: str
    unit: str
    amount: float
    currency: str


class PriceTable:
    def __init__(self, prices: list[Price]) -> None:
        self._prices = {(p.provider, p.channel, p.encoding): p for p in prices}

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        path = path or Path(str(files("engine.config") / "prices.csv"))
        try:
            parsed = read_contacts(path)
        except ContactsError as exc:
            raise PricingError(f"price table: {exc}") from None
        need = ("provider", "channel", "encoding", "unit", "price", "currency")
        missing = [c for c in need if c not in parsed.headers]
        if missing:
            raise PricingError(f"price table {path} has no {', '.join(missing)} column")
        columns = {c: parsed.table.column(c).to_pylist() for c in need}
        prices = []
        for i, line in enumerate(parsed.lines):
            try:
                amount = float(columns["price"][i])
            except ValueError:
                raise PricingError(f"price table {path} line {line}: {columns['price'][i]!r} is not a price") from None
            unit = columns["unit"][i].strip().lower()
            if unit not in ("segment", "message"):
                raise PricingError(f"price table {path} line {line}: unit must be segment or message")
            prices.append(
                Price(
                    columns["provider"][i].strip().lower(),
                    columns["channel"][i].strip().lower(),
                    columns["encoding"][i].strip().lower(),
                    unit,
                    amount,
                    columns["currency"][i].strip().upper(),
                )
            )
        return cls(prices)

    def price(self, provider: str, channel: str, encoding: str = "any") -> Price:
        found = self._prices.get((provider, channel, encoding)) or self._prices.get((provider, channel, "any"))
        if found is None:
            raise PricingError(f"no price for {provider} {channel} ({encoding}) in the price table")
        return found

    def describe(self, provider: str, channel: str) -> list[str]:
        """The prices a plan used, as a marketer reads them: `0.15 INR per segment (gsm7)`."""
        encodings = ("gsm7", "ucs2") if channel == "sms" else ("any",)
        prices = [self.price(provider, channel, encoding) for encoding in encodings]
        return [
            f"{p.amount:g} {p.currency} per {p.unit}" + (f" ({e})" if e != "any" else "")
            for p, e in zip(prices, encodings, strict=True)
        ]

    def costs(self, provider: str, channel: str, ucs2: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, str]:
        """Cost of each message and the currency; SMS by encoding and segment, the rest per message."""
        if channel != "sms":
            price = self.price(provider, channel)
            units = segments if price.unit == "segment" else np.ones(len(segments))
            return units * price.amount, price.currency
        gsm7, wide = self.price(provider, "sms", "gsm7"), self.price(provider, "sms", "ucs2")
        if gsm7.currency != wide.currency:
            raise PricingError(f"{provider} SMS prices are in two currencies")
        per_unit = np.where(ucs2, wide.amount, gsm7.amount)
        units = np.where(
            ucs2,
            segments if wide.unit == "segment" else 1,
            segments if gsm7.unit == "segment" else 1,
        )
        return units * per_unit, gsm7.currency
