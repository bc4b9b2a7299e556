"""What Flower shows as a task's result: one line an operator can read without opening the database.

A send task says which campaign and batch it worked on, what went to which
provider and how long it took, or why nothing went; a housekeeping task says
whether it found anything to do. Results travel through the broker and sit in
Flower for anyone with its login, so reasons taken from the database (provider
errors can name a contact) are masked the way logs are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from engine.clock import now
from engine.redact import mask_addresses_in
from engine.sending.recovery import Sweep
from engine.store import models
from engine.store.states import BatchState, CampaignState

B, M, C = models.BATCHES, models.MESSAGES, models.CAMPAIGNS
#: How a channel's messages are counted in a line ("1,000 SMS", "20 emails").
CHANNEL_WORDS = {"sms": "SMS", "email": "emails", "rcs": "RCS", "whatsapp": "WhatsApp"}
#: What a batch's end state says happened to it.
VERBS = {
    BatchState.SUBMITTED.value: "submitted",
    BatchState.SETTLED.value: "submitted",
    BatchState.FAILED.value: "failed",
    BatchState.AMBIGUOUS.value: "left ambiguous (the answer was lost)",
    BatchState.PLANNED.value: "put back",
    BatchState.CANCELLED.value: "cancelled",
    BatchState.SENDING.value: "still sending",
}
REASON_CHARS = 160


def masked(text: str) -> str:
    """`text` with every number and address masked, cut to one short line."""
    line = mask_addresses_in(" ".join(text.split()))
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 1] + "…"


def _batch(engine: Engine, batch_id: int) -> Any:
    query = select(B, C.c.state.label("campaign_state"), C.c.state_reason).join(C, C.c.id == B.c.campaign_id)
    with engine.connect() as connection:
        return connection.execute(query.where(B.c.id == batch_id)).one_or_none()


def _statuses(engine: Engine, batch_id: int) -> dict[str, int]:
    query = select(M.c.status, func.count()).where(M.c.batch_id == batch_id).group_by(M.c.status)
    with engine.connect() as connection:
        return {status: count for status, count in connection.execute(query)}


def _why(batch: Any) -> str | None:
    """Why a batch did not (wholly) go: its campaign stopped, the provider's error, or a later start."""
    state = batch.campaign_state
    if state not in (CampaignState.RUNNING.value, CampaignState.COMPLETED.value):
        reason = (batch.state_reason or "").removeprefix(f"{state}: ")  # "paused: HTTP 402 ..." says it once
        return masked(f"campaign {state}: {reason}" if reason else f"campaign {state}")
    if batch.error:
        return masked(batch.error)
    if batch.not_before is not None and batch.not_before > now():
        return f"not before {batch.not_before:%Y-%m-%d %H:%M:%S} UTC"
    return None


def took(seconds: float) -> str:
    """`0.8 s`, or `40 ms` under a tenth of a second."""
    return f"{seconds:.1f} s" if seconds >= 0.1 else f"{seconds * 1000:.0f} ms"


def send_line(engine: Engine, batch_id: int, outcome: str, seconds: float) -> str:
    """`campaign 12 batch 345: 1,000 SMS to noxitel submitted in 0.8 s`, or why the batch stopped.

    The send is over and recorded: a database that cannot be read now costs only the detail of the line.
    """
    try:
        return _send_line(engine, batch_id, outcome, seconds)
    except SQLAlchemyError as exc:
        return f"batch {batch_id}: {outcome} in {took(seconds)} (no detail: {type(exc).__name__})"


def _send_line(engine: Engine, batch_id: int, outcome: str, seconds: float) -> str:
    batch = _batch(engine, batch_id)
    if batch is None:
        return f"batch {batch_id}: no such batch — nothing sent"
    head = f"campaign {batch.campaign_id} batch {batch_id}"
    why = _why(batch)
    if outcome == "skipped":
        return f"{head}: skipped, nothing sent — " + (why or f"batch already {batch.state}")
    what = f"{batch.size:,} {CHANNEL_WORDS.get(batch.channel, batch.channel)} to {batch.provider}"
    line = f"{head}: {what} {VERBS.get(batch.state, batch.state)} in {took(seconds)}"
    counts = _statuses(engine, batch_id)
    if set(counts) != {BatchState.SUBMITTED.value} or batch.state != BatchState.SUBMITTED.value:
        line += " (" + ", ".join(f"{count:,} {status}" for status, count in sorted(counts.items())) + ")"
    stopped = batch.state not in (BatchState.SUBMITTED.value, BatchState.SETTLED.value)
    return f"{line} — {why}" if why and stopped else line


def _some(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else many or one + 'es'}"


def start_line(campaign_id: int, rung: int) -> str:
    """What `campaign.start_campaign` did."""
    if not rung:
        return f"campaign {campaign_id}: no batch due now — nothing queued"
    return f"campaign {campaign_id}: queued {_some(rung, 'batch')}"


def _joined(parts: Iterable[str], idle: str) -> str:
    done = [part for part in parts if part]
    return "; ".join(done) if done else idle


def _campaigns(verb: str, ids: Sequence[int]) -> str:
    if not ids:
        return ""
    return f"{verb} campaign{'s' if len(ids) > 1 else ''} " + ", ".join(str(i) for i in ids)


def sweep_line(result: Sweep, rung: int) -> str:
    """What the recovery sweep did, or `nothing to recover`."""
    return _joined(
        (
            f"marked {_some(len(result.ambiguous_batches), 'batch')} of stopped workers ambiguous"
            if result.ambiguous_batches
            else "",
            f"put back {_some(len(result.resumed_batches), 'batch')}" if result.resumed_batches else "",
            f"queued {_some(rung, 'due batch')}" if rung else "",
        ),
        "nothing to recover",
    )


def poll_line(polled: int, reports: int, pushed: int, expired: int, fallbacks: int) -> str:
    """What a report round did, or `nothing due`."""
    return _joined(
        (
            f"asked about {_some(polled, 'batch')}, {_some(reports, 'report', 'reports')}" if polled else "",
            f"applied {_some(pushed, 'pushed report', 'pushed reports')}" if pushed else "",
            f"expired {_some(expired, 'message', 'messages')}" if expired else "",
            f"queued {_some(fallbacks, 'SMS fallback', 'SMS fallbacks')}" if fallbacks else "",
        ),
        "nothing due",
    )


def scan_line(
    started: Sequence[int], woken: Sequence[int], planned: Sequence[int], refused: Sequence[tuple[int, str]], rung: int
) -> str:
    """What a look at the schedules did, or `nothing due`."""
    return _joined(
        (
            _campaigns("started", started),
            _campaigns("woke", woken),
            _campaigns("planned recurring run as", planned),
            *(masked(f"schedule r{schedule} refused: {reason}") for schedule, reason in refused),
            f"queued {_some(rung, 'batch')}" if rung else "",
        ),
        "nothing due",
    )
