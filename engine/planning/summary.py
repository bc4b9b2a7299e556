"""What a plan will do, in figures: the plan summary, as one typed value.

The planner builds it once, from the plan it has just made. The commands read
its fields (the table `campaign plan` prints, the question `campaign send`
asks), the balance check and a schedule add what they learn later (the
balance, warnings, a new start), saving fills in the campaign id, and
`as_json` gives the object `campaign plan --json` prints and the campaign row
stores: its keys, their order and their values are what scripts read, so they
are spelled in that one method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.planning.render import Encoded
from engine.providers.base import Balance
from engine.windows import Timing


@dataclass(frozen=True)
class Encodings:
    """How many SMS go as GSM-7 and as UCS-2, and the characters that made them UCS-2 (with their counts)."""

    gsm7: int = 0
    ucs2: int = 0
    because_of: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, encoded: Encoded) -> Encodings:
        ucs2 = int(encoded.ucs2.sum())
        return cls(len(encoded.ucs2) - ucs2, ucs2, encoded.because_of)

    def shares(self) -> list[tuple[str, int, dict[str, int] | None]]:
        """(encoding, messages, the characters that forced it) for each encoding some message uses."""
        found: list[tuple[str, int, dict[str, int] | None]] = []
        if self.gsm7:
            found.append(("gsm7", self.gsm7, None))
        if self.ucs2:
            found.append(("ucs2", self.ucs2, self.because_of))
        return found

    def as_json(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = {}
        if self.gsm7:
            result["gsm7"] = {"messages": self.gsm7}
        if self.ucs2:
            result["ucs2"] = {"messages": self.ucs2, "because_of": self.because_of}
        return result


@dataclass(frozen=True)
class DayShare:
    """The part of the campaign one day sends (a daily quota spreads a large campaign over days)."""

    #: 1 for the first day.
    day: int
    messages: int
    batches: int


@dataclass(frozen=True)
class Preview:
    """One recipient's message shown before sending, every part as it will go (the email subject, the RCS
    fallback SMS), its address masked; an SMS's parts and encoding."""

    line: int
    to: str
    text: str
    subject: str | None = None
    fallback: str | None = None
    segments: int | None = None
    encoding: str | None = None

    def as_json(self) -> dict[str, object]:
        shown = {"line": self.line, "to": self.to, "text": self.text, "subject": self.subject}
        return shown | {"fallback": self.fallback, "segments": self.segments, "encoding": self.encoding}


@dataclass(frozen=True)
class FallbackCost:
    """The SMS an RCS campaign falls back to, at most: every recipient's fallback sent."""

    segments: int
    encodings: Encodings
    max_cost: float


@dataclass(frozen=True)
class ScheduledStart:
    """When `campaign send --at/--every` starts the campaign, instead of now."""

    at: datetime
    tz: str
    #: The cron expression of `--every`; None for a single start (`--at`).
    recurrence: str | None


@dataclass
class PlanSummary:
    """The figures of a plan. Built by the planner; `campaign_id`, `balance`, `warnings`, `timing` and
    `schedule` are the fields that saving, the balance check and a schedule may change afterwards."""

    file: str
    encoding: str
    delimiter: str
    address_column: str
    channel: str
    provider: str
    sender: str | None
    rows: int
    valid: int
    rejected: int
    rejected_by_reason: dict[str, int]
    duplicates: int
    suppressed: int
    messages: int
    segments: int
    #: Empty (no encodings) for a channel other than SMS.
    encodings: Encodings
    smart_encoding_replacements: int
    batches: int
    largest_batch: int
    days: list[DayShare]
    estimated_cost: float
    currency: str
    dlt_template_id: str | None
    rejects_file: str
    previews: list[Preview]
    warnings: list[str]
    timing: Timing
    #: The price lines the cost was summed from, as a marketer reads them.
    prices: list[str]
    fallback: FallbackCost | None = None
    campaign_id: int | None = None
    balance: Balance | None = None
    schedule: ScheduledStart | None = None

    def as_json(self) -> dict[str, Any]:
        """The summary as `campaign plan --json` prints it and a saved campaign stores it, key for key."""
        summary: dict[str, Any] = {
            "file": self.file,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "address_column": self.address_column,
            "channel": self.channel,
            "provider": self.provider,
            "sender": self.sender,
            "rows": self.rows,
            "valid": self.valid,
            "rejected": self.rejected,
            "rejected_by_reason": self.rejected_by_reason,
            "duplicates": self.duplicates,
            "suppressed": self.suppressed,
            "messages": self.messages,
            "segments": self.segments,
            "encodings": self.encodings.as_json(),
            "smart_encoding_replacements": self.smart_encoding_replacements,
            "batches": self.batches,
            "largest_batch": self.largest_batch,
            "days": self._days_json(),
            "estimated_cost": self.estimated_cost,
            "currency": self.currency,
            "dlt_template_id": self.dlt_template_id,
            "rejects_file": self.rejects_file,
            "campaign_id": self.campaign_id,
            "previews": [p.as_json() for p in self.previews],
            "warnings": self.warnings,
            "balance": self._balance_json(),
            "window": self.timing.window_json(),
            "starts_at": self.timing.starts_at.isoformat(),
            "prices": self.prices,
        }
        if self.fallback is not None:
            summary["fallback"] = {
                "segments": self.fallback.segments,
                "encodings": self.fallback.encodings.as_json(),
                "max_cost": self.fallback.max_cost,
            }
        if self.schedule is not None:
            summary["scheduled_at"] = self.schedule.at.isoformat()
            summary["scheduled_tz"] = self.schedule.tz
            summary["recurrence"] = self.schedule.recurrence
        return summary

    def _days_json(self) -> list[dict[str, Any]]:
        return [
            {"day": day.day, "messages": day.messages, "batches": day.batches, "starts_at": start.isoformat()}
            for day, start in zip(self.days, self.timing.day_starts, strict=True)
        ]

    def _balance_json(self) -> dict[str, Any] | None:
        if self.balance is None:
            return None
        return {"amount": self.balance.amount, "currency": self.balance.currency, "credits": self.balance.credits}
