"""Every state a row can be in, every named group of states, and the error texts other modules match on.

A state is spelled once, here. The enums are the only place a state's word is
written; the CHECK constraints (`engine.store.models`), the groups below and
every statement that moves a row are built from them, so adding or renaming a
state is one change, and a misspelt state is an AttributeError at import rather
than an UPDATE that quietly matches nothing. A group that more than one module
needs, or that names a rule of the pipeline (what counts as sent, what is
final), lives here too, so two modules cannot disagree about it.

Groups are tuples of the plain `.value` strings: ready for SQL `IN (...)`, and
for `in` tests against the strings read back from the database. The migrations
keep their own frozen copies of the words (history does not change), and the
sandbox speaks the providers' vocabulary, not these.
"""

from __future__ import annotations

from enum import StrEnum


class CampaignState(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class ScheduleState(StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"


class BatchState(StrEnum):
    PLANNED = "planned"
    SENDING = "sending"
    SUBMITTED = "submitted"
    SETTLED = "settled"
    FAILED = "failed"
    CANCELLED = "cancelled"
    AMBIGUOUS = "ambiguous"


class BatchKind(StrEnum):
    SEND = "send"
    FALLBACK = "fallback"
    RETRY = "retry"


class MessageStatus(StrEnum):
    PLANNED = "planned"
    QUEUED = "queued"
    SUBMITTED = "submitted"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    REJECTED = "rejected"
    UNDELIVERABLE = "undeliverable"
    FALLBACK = "fallback"
    SUPPRESSED = "suppressed"
    INVALID = "invalid"
    EXPIRED = "expired"
    AMBIGUOUS = "ambiguous"
    CANCELLED = "cancelled"


_C, _B, _M = CampaignState, BatchState, MessageStatus

# Campaign states.

#: From which a campaign may be paused.
PAUSABLE: tuple[str, ...] = (_C.RUNNING.value, _C.SCHEDULED.value, _C.WAITING.value)
#: From which a campaign may be (re)started.
STARTABLE: tuple[str, ...] = (
    _C.DRAFT.value,
    _C.SCHEDULED.value,
    _C.PAUSED.value,
    _C.WAITING.value,
    _C.FAILED.value,
)
#: Finished for good as far as `cancel` goes: nothing is left to cancel.
NOT_CANCELLABLE: tuple[str, ...] = (_C.COMPLETED.value, _C.CANCELLED.value)
#: In which an SMS fallback may still be moved to its batch (a paused one keeps it planned until resumed).
MOVABLE: tuple[str, ...] = (_C.RUNNING.value, _C.COMPLETED.value, _C.WAITING.value, _C.PAUSED.value)

# Batch states.

#: Still to be sent, or being sent: a campaign with such a batch is not complete.
PENDING_BATCHES: tuple[str, ...] = (_B.PLANNED.value, _B.SENDING.value)
#: The provider has dealt with the batch's messages (taken, refused or in doubt).
SENT_BATCHES: tuple[str, ...] = (_B.SUBMITTED.value, _B.SETTLED.value, _B.FAILED.value, _B.AMBIGUOUS.value)
#: Nothing more will be sent from the batch: dealt with by the provider, or cancelled.
DONE_BATCHES: tuple[str, ...] = (*SENT_BATCHES, _B.CANCELLED.value)
#: Awaiting reports: settled once every message is through (an `ambiguous` batch too, once reports vouch for all).
SETTLEABLE: tuple[str, ...] = (_B.SUBMITTED.value, _B.AMBIGUOUS.value)
#: The provider took the call, or may have: reports may name its messages, and it may hold ambiguous ones.
#: (A batch still `sending` has not recorded what the provider took.)
TAKEN_BATCHES: tuple[str, ...] = (_B.SUBMITTED.value, _B.SETTLED.value, _B.AMBIGUOUS.value)

# Message statuses.

#: Not handed to the provider yet: `queued` is claimed by a per-recipient call not yet made.
UNSENT: tuple[str, ...] = (_M.PLANNED.value, _M.QUEUED.value)
#: Recipients nothing was sent to.
NOT_SENT: tuple[str, ...] = (*UNSENT, _M.CANCELLED.value, _M.SUPPRESSED.value, _M.INVALID.value)
#: Taken by the provider, with no final news yet.
UNCONFIRMED: tuple[str, ...] = (_M.SUBMITTED.value, _M.SENT.value)
#: Surely taken by the provider and waiting for its report (not `ambiguous`, not `queued`).
AWAITING_REPORT: tuple[str, ...] = (_M.SUBMITTED.value, _M.SENT.value, _M.FALLBACK.value)
#: Still waiting for news: a report can only move them forward.
OPEN: tuple[str, ...] = (_M.SUBMITTED.value, _M.SENT.value, _M.AMBIGUOUS.value, _M.QUEUED.value, _M.FALLBACK.value)
#: Failures worth another try: the network, an outage, a message that expired on the way. A refusal
#: (invalid number, DND, DLT scrubbing: `rejected`, `undeliverable`) would only fail again.
TEMPORARY_FAILURES: tuple[str, ...] = (_M.FAILED.value, _M.EXPIRED.value)
#: An RCS message that did not arrive: refused by the device, or failed after the provider took it.
NOT_ARRIVED: tuple[str, ...] = (_M.UNDELIVERABLE.value, _M.FAILED.value, _M.EXPIRED.value)
#: The recipient has it.
REACHED: tuple[str, ...] = (_M.DELIVERED.value, _M.READ.value)
#: What a send itself tells of a message, before any report: taken, refused, or in doubt.
SEND_OUTCOMES: tuple[str, ...] = (_M.SUBMITTED.value, _M.FAILED.value, _M.AMBIGUOUS.value)

#: How far a message has got; a report moves it only to a higher rank. From FINAL_RANK up a
#: status is final; only `read` may follow `delivered`.
RANK: dict[MessageStatus, int] = {
    _M.PLANNED: 0,
    _M.QUEUED: 1,
    _M.SUBMITTED: 2,
    _M.AMBIGUOUS: 2,
    _M.SENT: 3,
    _M.FALLBACK: 4,
    _M.DELIVERED: 10,
    _M.FAILED: 10,
    _M.REJECTED: 10,
    _M.UNDELIVERABLE: 10,
    _M.EXPIRED: 10,
    _M.SUPPRESSED: 10,
    _M.INVALID: 10,
    _M.CANCELLED: 10,
    _M.READ: 11,
}
FINAL_RANK = 10
#: Final statuses: no report changes them, except `read` after `delivered`.
FINAL: tuple[str, ...] = tuple(status.value for status, rank in RANK.items() if rank >= FINAL_RANK)
#: What lets a batch settle: final statuses, and `fallback`, whose SMS is the provider's to report.
THROUGH: tuple[str, ...] = (*FINAL, _M.FALLBACK.value)

#: What a provider's report says when its word is new to the engine: counted, and the message left as it was.
UNKNOWN = "unknown"

# Error texts that mark why a row is in its state; other modules select rows by them.

#: A batch (and its unsent messages) left `ambiguous` by the recovery sweep because its worker's lease ran out.
LEASE_EXPIRED = "the worker sending this batch stopped before the provider answered; it may have been sent"
#: A message the engine gave up on (`expired`): no report came, so it may well have been delivered.
UNREPORTED = "no final delivery report within the maximum age"
#: A message left `suppressed` when its batch was claimed: the address opted out after the campaign was planned.
OPTED_OUT_BEFORE_SEND = "opted out before it was sent"
