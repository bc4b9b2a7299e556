"""Sending one batch: claim it, throttle, call the provider, record what it said, and decide what next.

The batch row is the unit of work and the database the source of truth:

    planned --claim--> sending --answer--> submitted
                          |--------------> failed      (the provider refused it, or retries ran out)
                          |--------------> ambiguous   (sent, but the answer was lost)
                          '--------------> planned     (402 / 401: nothing was sent; the campaign stops)

A claim is one conditional UPDATE (`state = 'planned'` and the campaign running),
so a batch delivered twice by the broker or raced by two workers is sent once.
The claim carries a lease; a worker that dies mid-call leaves the batch in
`sending`, and the recovery sweep marks it `ambiguous` once the lease runs out,
because the provider may have accepted it. Nothing here ever re-sends an
ambiguous batch: that is how campaigns send twice.

Endpoints that take one recipient per call (Pixabits RCS and WhatsApp) claim
each message the same way (`planned -> queued`) before calling, so a crash
leaves at most the calls in flight uncertain.

Three decisions hold here, for every sender (local mode and workers alike):
  * the claim marks the batch's messages to addresses on the suppression list
    `suppressed`, in the claim's transaction: an opt-out made after planning
    is honoured whenever the batch goes (scheduled, resumed, retried);
  * before each call the campaign's state is read again (`watch.Watch`, at most
    twice a second): once paused or cancelled, no further call of the batch is
    made, and what it had not sent is left `planned` for `resume` (or cancelled);
  * an error nothing here foresaw releases the batch (or leaves in doubt only a
    call that may have reached the provider) and fails the campaign with its
    reason, so `resume` and `cancel` act on it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import traceback
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, and_, exists, func, or_, select, update

from engine.clock import now
from engine.errors import InvalidRequest
from engine.providers.base import (
    Channel,
    EmailBatch,
    OutboundMessage,
    Provider,
    RcsBatch,
    SmsBatch,
    SmsFallback,
    Submission,
    WhatsAppBatch,
)
from engine.providers.errors import (
    AuthenticationFailed,
    InsufficientCredits,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
    RequestRejected,
    TransientError,
)
from engine.redact import mask_addresses_in
from engine.sending.capability import CapabilityCache, MemoryCapabilityCache, capabilities
from engine.sending.fallback import route_now
from engine.sending.personalize import for_provider
from engine.sending.quota import DailyQuota
from engine.sending.throttle import Throttle
from engine.sending.watch import Stopped, Watch
from engine.sending.windows import defer_outside_window
from engine.store import models
from engine.store.states import (
    LEASE_EXPIRED,
    OPTED_OUT_BEFORE_SEND,
    UNSENT,
    BatchState,
    CampaignState,
    MessageStatus,
)
from engine.store.writes import (
    cancel_unsent,
    complete_if_idle,
    lock,
    mark_campaign,
    set_provider_ids,
    update_messages,
)
from engine.windows import next_day

log = logging.getLogger(__name__)
#: A client method that sends one provider-neutral batch.
Call = Callable[[Any], Awaitable[Submission]]

B, M, C, S = models.BATCHES, models.MESSAGES, models.CAMPAIGNS, models.SUPPRESSIONS
#: Messages the recovery sweep marked ambiguous only because their worker's lease ran out.
SWEPT = and_(M.c.status == MessageStatus.AMBIGUOUS.value, M.c.error == LEASE_EXPIRED)
UNSENT_OR_SWEPT = or_(M.c.status.in_(UNSENT), SWEPT)
#: How long a batch waits after its RCS capability lookups failed.
CAPABILITY_RETRY_SECONDS = 60.0
#: `_attempt`'s answer when only the one message of a per-recipient call was refused or left in doubt.
MESSAGE_DONE = "message-done"


class LeaseLost(Exception):
    """The recovery sweep took the batch: this worker stops before another call."""


class Lease:
    """Whether this worker still holds its batch, as the heartbeat last found, and whether one of its requests
    is with the provider now (`calling`: an error from nowhere then leaves that request in doubt)."""

    __slots__ = ("calling", "lost")

    def __init__(self) -> None:
        self.lost = False
        self.calling = False


class MessageRow(NamedTuple):
    """What sending reads of one planned message."""

    id: int
    address: str
    body: str
    subject: str | None
    fallback_body: str | None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter for failures that are safe to retry."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


@dataclass
class Sender:
    """What a worker (or local mode) needs to send: the database, the provider clients and their throttles."""

    engine: Engine
    providers: Mapping[str, Provider]
    throttles: Mapping[str, Throttle]
    worker: str
    lease_seconds: float = 300.0
    retry: RetryPolicy = RetryPolicy()
    #: Where each provider that takes a per-call `notifyUrl` should push its reports.
    notify_urls: Mapping[str, str | None] = field(default_factory=dict)
    quotas: Mapping[str, DailyQuota] = field(default_factory=dict)
    #: RCS capability answers, per provider (looked up where the engine routes the SMS fallback).
    capability_caches: Mapping[str, CapabilityCache] = field(default_factory=lambda: defaultdict(MemoryCapabilityCache))
    #: Who sends the SMS fallback of an RCS campaign: the provider (`smsFallback`) or the engine.
    rcs_fallback: str = "provider"
    #: Longest provider `Retry-After` waited out in place; a longer one defers the batch.
    max_hold: float = 60.0
    _leases: dict[int, Lease] = field(default_factory=dict, init=False, repr=False)
    _watches: dict[int, Watch] = field(default_factory=dict, init=False, repr=False)

    async def send_batch(self, batch_id: int) -> str:
        """Send one batch if it is still due and unclaimed; returns the state it ends in (or `skipped`).

        While the batch is in hand a heartbeat renews its lease, so only a worker
        that died (or froze) loses it to the recovery sweep; a worker that finds
        its lease gone stops before its next call.
        """
        if not self._claim(batch_id):
            log.debug("batch %s is not due or already claimed", batch_id)
            return "skipped"
        lease = Lease()
        self._leases[batch_id] = lease
        heartbeat = asyncio.create_task(self._keep_lease(batch_id, lease))
        try:
            return await self._send_claimed(batch_id)
        except Exception as exc:  # whatever it is, the batch must not stay claimed
            return self._fault(batch_id, lease, exc)
        finally:
            heartbeat.cancel()
            del self._leases[batch_id]
            self._watches.pop(batch_id, None)

    async def _send_claimed(self, batch_id: int) -> str:
        with self.engine.connect() as connection:
            batch = connection.execute(select(B).where(B.c.id == batch_id)).one()
            campaign = connection.execute(select(C).where(C.c.id == batch.campaign_id)).one()
            self._watches[batch_id] = Watch(self.engine, batch.campaign_id)
            result = connection.execute(
                select(M.c.id, M.c.address, M.c.body, M.c.subject, M.c.fallback_body)
                .where(M.c.batch_id == batch_id, M.c.status == MessageStatus.PLANNED.value)
                .order_by(M.c.id)
            )
            # Plain tuples from the driver: these columns need no conversion, and a
            # SQLAlchemy Row per message costs more than the query (50,000 per batch).
            rows = [MessageRow(*values) for values in result.cursor.fetchall()]
        if not rows:
            self._close_batch(batch_id, BatchState.SUBMITTED, None)
            return BatchState.SUBMITTED.value
        provider = self.providers[batch.provider]
        channel = Channel(batch.channel)
        if provider.max_batch(channel) == 1:
            return await self._send_each(batch, campaign, rows, provider)
        return await self._send_whole(batch, campaign, rows, provider)

    # claims -------------------------------------------------------------------

    def _claim(self, batch_id: int) -> bool:
        """Take the batch if it is due and its campaign running, and suppress its opted-out addresses, in one
        transaction."""
        moment = now()
        if not defer_outside_window(self.engine, batch_id, moment):
            return False
        running = exists().where(C.c.id == B.c.campaign_id, C.c.state == CampaignState.RUNNING.value)
        with self.engine.begin() as connection:
            claimed = connection.execute(
                update(B)
                .where(
                    B.c.id == batch_id,
                    B.c.state == BatchState.PLANNED.value,
                    (B.c.not_before.is_(None)) | (B.c.not_before <= moment),
                    running,
                )
                .values(
                    state=BatchState.SENDING.value,
                    claimed_by=self.worker,
                    claim_expires_at=moment + timedelta(seconds=self.lease_seconds),
                    attempts=B.c.attempts + 1,
                    updated_at=moment,
                )
            ).rowcount
            if claimed == 1:
                self._suppress(connection, batch_id)
        return claimed == 1

    @staticmethod
    def _suppress(connection: Connection, batch_id: int) -> None:
        """Mark the batch's planned messages to suppressed addresses `suppressed`: one statement per batch."""
        connection.execute(
            update(M)
            .where(
                M.c.batch_id == batch_id,
                M.c.status == MessageStatus.PLANNED.value,
                M.c.address.in_(select(S.c.address)),
            )
            .values(status=MessageStatus.SUPPRESSED.value, error=OPTED_OUT_BEFORE_SEND)
        )

    async def _keep_lease(self, batch_id: int, lease: Lease) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            if not self._extend_lease(batch_id):
                lease.lost = True
                return

    def _extend_lease(self, batch_id: int) -> bool:
        with self.engine.begin() as connection:
            return (
                connection.execute(
                    update(B)
                    .where(B.c.id == batch_id, B.c.claimed_by == self.worker, B.c.state == BatchState.SENDING.value)
                    .values(claim_expires_at=now() + timedelta(seconds=self.lease_seconds))
                ).rowcount
                == 1
            )

    def _ours(self, batch_id: int) -> Any:
        """The batch is still this worker's to write: claimed by it, or swept to ambiguous only for want of news.

        What a worker learns after the sweep (the provider answered, or refused)
        is evidence the sweep did not have, so it may still correct the batch.
        """
        return and_(
            B.c.id == batch_id,
            or_(
                B.c.claimed_by == self.worker,
                and_(B.c.state == BatchState.AMBIGUOUS.value, B.c.error == LEASE_EXPIRED),
            ),
        )

    # the call -------------------------------------------------------------------

    async def _call(self, batch_id: int, provider: Provider, send: Call, payload: Any) -> Submission:
        """One provider call under the account's throttle; 429s wait, transient failures back off and retry.

        A `Retry-After` longer than `max_hold` (a daily quota, say) is not waited
        out here: the error goes up and the batch is deferred instead of holding
        a worker for hours.
        """
        throttle = self.throttles[provider.name]
        lease, watch = self._leases[batch_id], self._watches[batch_id]
        failures = 0
        while True:
            await throttle.acquire(max_wait=self.max_hold)
            if lease.lost:
                raise LeaseLost(f"batch {batch_id} was given up by the recovery sweep")
            watch.check()
            try:
                return await self._request(lease, send, payload)
            except RateLimited as exc:
                log.info("%s asked to wait %.1f s; every sender of the account holds", provider.name, exc.retry_after)
                await throttle.hold(exc.retry_after)
                if exc.retry_after > self.max_hold:
                    raise
            except TransientError as exc:
                failures += 1
                if failures >= self.retry.attempts:
                    raise
                delay = self.retry.delay(failures)
                log.warning("batch %s: %s; retry %d in %.1f s", batch_id, exc, failures, delay)
                await asyncio.sleep(delay)

    @staticmethod
    async def _request(lease: Lease, send: Call, payload: Any) -> Submission:
        """One request; `lease.calling` stays set if it ends in an error the client did not sort (see `_fault`)."""
        lease.calling = True
        try:
            submission = await send(payload)
        except (ProviderError, InvalidRequest):
            lease.calling = False
            raise
        lease.calling = False
        return submission

    async def _attempt(
        self,
        batch: Any,
        campaign: Any,
        rows: Sequence[Any],
        provider: Provider,
        part: Sequence[int] | None = None,
        channel: Channel | None = None,
    ) -> Submission | str:
        """Reserve the daily quota, call the provider, and return its submission, or the state the error led to.

        `part` names the messages of this call when it carries only some of the
        batch (one recipient, or one side of an RCS/SMS split): a refusal or a
        lost answer then concerns those messages alone.
        """
        quota = self.quotas.get(provider.name)
        moment = now()
        if quota is not None and len(rows) > quota.limit:
            reason = f"{len(rows):,} messages never fit the daily quota of {quota.limit:,}: plan the campaign again"
            return self._failed_call(batch, RequestRejected(provider.name, reason), part)
        if quota is not None and not await quota.reserve(len(rows), moment):
            self._release(batch.id, part, not_before=next_day(moment))
            log.info("batch %s waits for tomorrow's %s quota", batch.id, provider.name)
            return BatchState.PLANNED.value
        sent = False
        try:
            use = channel or Channel(batch.channel)
            fallback = use is Channel.SMS and campaign.channel == Channel.RCS.value
            payload, send = self.payload(use, campaign, rows, provider, fallback=fallback)
            submission = await self._call(batch.id, provider, send, payload)
            sent = True
            return submission
        except LeaseLost:
            log.warning("batch %s: lease lost; leaving it to the recovery sweep", batch.id)
            if part is not None:
                # Claimed for a call that never left, in a batch someone else may be sending by now:
                # flagged like the sweep flags calls in flight, so `resend-ambiguous` can send it.
                with self.engine.begin() as connection:
                    connection.execute(
                        update(M)
                        .where(M.c.id.in_(part), M.c.status == MessageStatus.QUEUED.value)
                        .values(status=MessageStatus.AMBIGUOUS.value, error=LEASE_EXPIRED)
                    )
            return BatchState.AMBIGUOUS.value
        except Stopped as stop:
            return self._stopped(batch, part, stop.state)
        except OutcomeUnknown as exc:
            sent = True  # it may count against the quota: assume it does
            return self._failed_call(batch, exc, part)
        except ProviderError as exc:
            return self._failed_call(batch, exc, part)
        except InvalidRequest as exc:
            return self._failed_call(batch, RequestRejected(provider.name, str(exc)), part)
        finally:
            if quota is not None:
                await quota.finish(len(rows), moment, sent)

    async def _send_whole(
        self, batch: Any, campaign: Any, rows: Sequence[Any], provider: Provider, routed: bool = False
    ) -> str:
        if not routed and batch.channel == Channel.RCS.value and self._engine_fallback(campaign, rows, provider):
            return await self._send_rcs_routed(batch, campaign, rows, provider)
        submission = await self._attempt(batch, campaign, rows, provider)
        if isinstance(submission, str):
            return submission
        asked = batch.channel == Channel.RCS.value and self._provider_fallback(campaign, rows, provider)
        with self.engine.begin() as connection:
            self._record(connection, batch.id, submission, batch.channel, provider_fallback=asked, cost=submission.cost)
            if submission.message_ids:
                ids = {row.address: row.id for row in rows}
                pairs = [(ids[a], pid) for a, pid in submission.message_ids.items() if a in ids]
                set_provider_ids(connection, pairs)
        self._complete(batch.campaign_id)
        return BatchState.SUBMITTED.value

    async def _send_each(self, batch: Any, campaign: Any, rows: Sequence[Any], provider: Provider) -> str:
        """One call per recipient, each message claimed (`planned -> queued`) before its call; what each call
        cost is added to the batch's as it goes, so a batch paused halfway keeps the cost of what went."""
        for row in rows:
            with self.engine.begin() as connection:
                claimed = connection.execute(
                    update(M)
                    .where(M.c.id == row.id, M.c.status == MessageStatus.PLANNED.value)
                    .values(status=MessageStatus.QUEUED.value)
                ).rowcount
            if not claimed:
                continue
            submission = await self._attempt(batch, campaign, [row], provider, part=[row.id])
            if submission == MESSAGE_DONE:
                continue
            if isinstance(submission, str):
                return submission
            with self.engine.begin() as connection:
                connection.execute(
                    update(M)
                    .where(M.c.id == row.id)
                    .values(
                        status=MessageStatus.SUBMITTED.value,
                        submitted_at=now(),
                        channel_used=batch.channel,
                        provider_message_id=submission.message_ids.get(row.address),
                        cost=submission.cost,
                    )
                )
                if submission.cost is not None:
                    connection.execute(
                        update(B)
                        .where(B.c.id == batch.id)
                        .values(reported_cost=func.coalesce(B.c.reported_cost, 0) + submission.cost)
                    )
        with self.engine.begin() as connection:
            self._record(connection, batch.id, None, batch.channel)
        self._complete(batch.campaign_id)
        return BatchState.SUBMITTED.value

    def payload(
        self, channel: Channel, campaign: Any, rows: Sequence[Any], provider: Provider, fallback: bool = False
    ) -> tuple[Any, Call]:
        """The provider-neutral batch for these rows, and the client method that sends it.

        `fallback` sends the rows' SMS fallback text instead of their message. In
        an RCS batch, the provider's own `smsFallback` is asked for only when
        every recipient's fallback text is the same (it takes one text per call);
        otherwise the engine routes the fallback itself (`_send_rcs_routed`).
        """
        bodies = [r.fallback_body if fallback else r.body for r in rows]
        source = campaign.fallback_template if fallback else campaign.message_template
        template: str | None = None
        params: list[dict[str, str]] | None = None
        if channel in provider.renders_templates:
            rendered = for_provider(source, bodies)
            template, params = rendered.text, rendered.params
        messages = [
            OutboundMessage(r.address, bodies[i], params[i] if params else None, r.subject) for i, r in enumerate(rows)
        ]
        notify = self.notify_urls.get(provider.name)
        if channel is Channel.SMS:
            batch = SmsBatch(
                sender=campaign.sender or "",
                messages=messages,
                template=template,
                dlt_entity_id=campaign.dlt_entity_id,
                dlt_template_id=campaign.dlt_template_id,
                notify_url=notify,
            )
            return batch, provider.send_sms
        if channel is Channel.EMAIL:
            return EmailBatch(campaign.sender or "", messages), provider.send_email
        if channel is Channel.WHATSAPP:
            return WhatsAppBatch(messages), provider.send_whatsapp
        provider_fallback = None
        if self._provider_fallback(campaign, rows, provider):
            provider_fallback = SmsFallback(campaign.sender or "", rows[0].fallback_body)
        rcs = RcsBatch(
            messages,
            agent_id=int(campaign.agent_id) if campaign.agent_id else None,
            template=template,
            content={"text": template or bodies[0]},
            fallback=provider_fallback,
            notify_url=notify,
        )
        return rcs, provider.send_rcs

    def _provider_fallback(self, campaign: Any, rows: Sequence[Any], provider: Provider) -> bool:
        """Whether this RCS batch asks the provider for its SMS fallback (else the engine routes it, or none)."""
        return (
            provider.sms_fallback_per_call
            and bool(campaign.fallback_template)
            and self.rcs_fallback == "provider"
            and len({r.fallback_body for r in rows}) == 1
        )

    def _engine_fallback(self, campaign: Any, rows: Sequence[Any], provider: Provider) -> bool:
        return (
            provider.sms_fallback_per_call
            and bool(campaign.fallback_template)
            and not self._provider_fallback(campaign, rows, provider)
        )

    async def _send_rcs_routed(self, batch: Any, campaign: Any, rows: Sequence[Any], provider: Provider) -> str:
        """RCS to the devices that take it; the others move to an SMS fallback batch, sent next by this worker.

        Each message is in one batch only, so it gets RCS or SMS, never both;
        the RCS batch keeps its one provider batch id, for its reports.
        """
        agent = int(campaign.agent_id) if campaign.agent_id else None
        numbers = [r.address for r in rows]
        try:
            capable = await capabilities(
                provider,
                self.throttles[provider.name],
                self.capability_caches[provider.name],
                numbers,
                agent,
                self.max_hold,
            )
        except ProviderError as exc:
            # Only lookups failed: nothing was sent, so the batch simply goes again later.
            wait = exc.retry_after if isinstance(exc, RateLimited) else CAPABILITY_RETRY_SECONDS
            log.warning("batch %s: capability lookups failed (%s); again in %.0f s", batch.id, exc, wait)
            self._release(batch.id, None, not_before=now() + timedelta(seconds=wait))
            return BatchState.PLANNED.value
        except InvalidRequest as exc:
            return self._failed_call(batch, RequestRejected(provider.name, str(exc)))
        without = [r.id for r in rows if not capable[r.address]]
        moved: list[int] = []
        if without:
            with self.engine.begin() as connection:
                lock(connection, campaign.id)
                if connection.execute(select(B.c.id).where(self._ours(batch.id))).first() is None:
                    return BatchState.AMBIGUOUS.value  # the sweep took it meanwhile: leave it to its rules
                moved = route_now(connection, campaign, without).batches
        rcs_rows = [r for r in rows if capable[r.address]]
        state = await self._send_whole(batch, campaign, rcs_rows, provider, routed=True) if rcs_rows else None
        if state is None:  # every device took SMS: nothing is left to report on here
            self._close_batch(batch.id, BatchState.SETTLED, None)
            state = BatchState.SETTLED.value
        for fallback_batch in moved:
            await self.send_batch(fallback_batch)
        return state

    # outcomes -------------------------------------------------------------------

    def _record(
        self,
        connection: Connection,
        batch_id: int,
        submission: Submission | None,
        channel: str,
        provider_fallback: bool = False,
        cost: float | None = None,
    ) -> None:
        """Mark the batch submitted with the provider's ids (and add what it said the call cost to the batch's),
        in the caller's transaction.

        A batch the recovery sweep already called ambiguous becomes submitted too:
        the provider's answer is the evidence the sweep did not have.
        """
        moment = now()
        connection.execute(
            update(B)
            .where(self._ours(batch_id))
            .values(
                state=BatchState.SUBMITTED.value,
                provider_batch_id=submission.batch_id if submission else None,
                provider_fallback=provider_fallback,
                reported_cost=B.c.reported_cost if cost is None else func.coalesce(B.c.reported_cost, 0) + cost,
                submitted_at=moment,
                claimed_by=None,
                claim_expires_at=None,
                error=None,
                updated_at=moment,
            )
        )
        if submission is not None:
            connection.execute(
                update(M)
                .where(M.c.batch_id == batch_id, UNSENT_OR_SWEPT)
                .values(status=MessageStatus.SUBMITTED.value, submitted_at=moment, channel_used=channel, error=None)
            )

    def _failed_call(self, batch: Any, exc: ProviderError, part: Sequence[int] | None = None) -> str:
        """Act on a provider error: the answer says whether to stop the campaign, the batch or some messages."""
        if isinstance(exc, RateLimited):
            self._release(batch.id, part, not_before=now() + timedelta(seconds=exc.retry_after))
            return BatchState.PLANNED.value
        if isinstance(exc, InsufficientCredits):
            self._release(batch.id, part)
            mark_campaign(
                self.engine,
                batch.campaign_id,
                CampaignState.PAUSED,
                f"paused: {exc}. Top up, then `campaign resume {batch.campaign_id}`",
            )
            return BatchState.PLANNED.value
        if isinstance(exc, AuthenticationFailed):
            self._release(batch.id, part)
            mark_campaign(self.engine, batch.campaign_id, CampaignState.FAILED, f"failed: {exc}")
            return BatchState.PLANNED.value
        doubt = isinstance(exc, OutcomeUnknown)
        # A refusal is for good (invalid number, DLT); retries that ran out are a temporary failure.
        outcome = (
            MessageStatus.AMBIGUOUS
            if doubt
            else MessageStatus.REJECTED
            if isinstance(exc, RequestRejected)
            else MessageStatus.FAILED
        )
        if part is not None:
            # Only these messages were in the call: they are refused or in doubt; the others go on.
            self._mark(part, outcome, str(exc))
            return MESSAGE_DONE
        self._close_batch(batch.id, BatchState.AMBIGUOUS if doubt else BatchState.FAILED, str(exc), outcome)
        return BatchState.AMBIGUOUS.value if doubt else BatchState.FAILED.value

    def _stopped(self, batch: Any, part: Sequence[int] | None, state: str) -> str:
        """The campaign stopped running before this call left, so the call is not made.

        The batch and this call's messages go back to `planned`, so `resume`
        sends exactly what had not gone, once. A cancelled campaign's are
        cancelled instead (`cancel` leaves the batches in hand to their senders).
        """
        log.info("batch %s: campaign %s is %s; its next call is not made", batch.id, batch.campaign_id, state)
        self._release(batch.id, part)
        if state != CampaignState.CANCELLED.value:
            return BatchState.PLANNED.value
        with self.engine.begin() as connection:
            cancel_unsent(connection, B.c.id == batch.id, B.c.state == BatchState.PLANNED.value)
            return str(connection.execute(select(B.c.state).where(B.c.id == batch.id)).scalar_one())

    def _fault(self, batch_id: int, lease: Lease, exc: Exception) -> str:
        """An error nothing here foresaw: the campaign fails with the reason, and the batch is released.

        The campaign fails first, so that closing its last batch does not
        complete it. Only a request that was with the provider when the error
        came may have been taken (`_in_doubt`); otherwise nothing of the call
        left, and the batch goes back to `planned`, for `resume` (or `cancel`).
        """
        with self.engine.connect() as connection:
            batch = connection.execute(select(B).where(B.c.id == batch_id)).one()
        error = f"{type(exc).__name__}: {mask_addresses_in(str(exc))}"
        reason = (
            f"failed: batch {batch.seq + 1} met an unexpected error ({error}); "
            f"`campaign resume {batch.campaign_id}` tries it again, `campaign cancel {batch.campaign_id}` drops it"
        )
        log.error("batch %s: %s; at %s", batch_id, reason, "".join(traceback.format_tb(exc.__traceback__)[-3:]))
        mark_campaign(self.engine, batch.campaign_id, CampaignState.FAILED, reason)
        if lease.calling:
            return self._in_doubt(batch, reason)
        self._release(batch_id, None)
        return BatchState.PLANNED.value

    def _in_doubt(self, batch: Any, reason: str) -> str:
        """The request in flight may have been taken: its messages become `ambiguous`, never `planned` again.

        In a per-recipient batch that is the one `queued` message; the others go back to `planned`.
        """
        if self.providers[batch.provider].max_batch(Channel(batch.channel)) > 1:
            self._close_batch(batch.id, BatchState.AMBIGUOUS, reason, MessageStatus.AMBIGUOUS)
            return BatchState.AMBIGUOUS.value
        with self.engine.begin() as connection:
            connection.execute(
                update(M)
                .where(M.c.batch_id == batch.id, M.c.status == MessageStatus.QUEUED.value)
                .values(status=MessageStatus.AMBIGUOUS.value, error=reason, submitted_at=now())
            )
        self._release(batch.id, None)
        return BatchState.PLANNED.value

    def _mark(self, message_ids: Sequence[int], status: MessageStatus, reason: str) -> None:
        values: dict[str, Any] = {"status": status.value, "error": reason}
        if status is MessageStatus.AMBIGUOUS:
            values["submitted_at"] = now()  # it may have gone out, and counts against the quota
        with self.engine.begin() as connection:
            update_messages(connection, message_ids, **values)

    def _release(self, batch_id: int, part: Sequence[int] | None, not_before: datetime | None = None) -> None:
        """Nothing was sent: give the batch (and the messages of this call) back to `planned`, due at `not_before`.

        Messages the sweep had marked ambiguous meanwhile go back too: no call of theirs left this worker.
        """
        with self.engine.begin() as connection:
            owned = connection.execute(
                update(B)
                .where(self._ours(batch_id))
                .values(
                    state=BatchState.PLANNED.value,
                    claimed_by=None,
                    claim_expires_at=None,
                    error=None,
                    not_before=not_before or B.c.not_before,
                )
            ).rowcount
            if not owned:
                return
            unsent = M.c.status == MessageStatus.QUEUED.value
            if part is not None:
                unsent = and_(unsent, M.c.id.in_(part))
            connection.execute(
                update(M)
                .where(M.c.batch_id == batch_id, or_(unsent, SWEPT))
                .values(status=MessageStatus.PLANNED.value, error=None, submitted_at=None)
            )
            # If the sweep had closed the campaign on this batch, there is work again.
            connection.execute(
                update(C)
                .where(
                    C.c.id == select(B.c.campaign_id).where(B.c.id == batch_id).scalar_subquery(),
                    C.c.state == CampaignState.COMPLETED.value,
                )
                .values(state=CampaignState.RUNNING.value, finished_at=None)
            )

    def _close_batch(
        self, batch_id: int, state: BatchState, reason: str | None, messages: MessageStatus | None = None
    ) -> None:
        """Release the batch in `state`; `messages` is what its unsent messages become."""
        with self.engine.begin() as connection:
            owned = connection.execute(
                update(B)
                .where(self._ours(batch_id))
                .values(state=state.value, error=reason, claimed_by=None, claim_expires_at=None)
            ).rowcount
            if owned and messages is not None:
                values: dict[str, Any] = {"status": messages.value, "error": reason}
                if messages is MessageStatus.AMBIGUOUS:
                    values["submitted_at"] = now()
                connection.execute(update(M).where(M.c.batch_id == batch_id, UNSENT_OR_SWEPT).values(**values))
        self._complete(select(B.c.campaign_id).where(B.c.id == batch_id).scalar_subquery())

    def _complete(self, campaign_id: Any) -> None:
        """Complete the campaign if no batch is left, after the batch's commit (`complete_if_idle`)."""
        complete_if_idle(self.engine, campaign_id)
