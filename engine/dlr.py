"""Delivery reports: the providers' words mapped to canonical statuses, applied to messages in one statement.

Statuses only move forward: a late `sent` never overwrites `delivered`, `read`
outranks `delivered`, and any other final status is final. The rank lives in
SQL (a CASE over the status), so a page of 50,000 reports is applied with one
UPDATE joined to a staging table, not one UPDATE per message.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, case, exists, select, text, update

from engine import models
from engine.clock import now
from engine.db import bulk_insert
from engine.providers.base import Channel, DeliveryReport

log = logging.getLogger(__name__)
S = models.MessageStatus

#: Higher wins. From 10 up a status is final; only `read` may follow `delivered`.
RANK: dict[str, int] = {
    S.PLANNED: 0, S.QUEUED: 1, S.SUBMITTED: 2, S.AMBIGUOUS: 2, S.SENT: 3, S.FALLBACK: 4,
    S.DELIVERED: 10, S.FAILED: 10, S.REJECTED: 10, S.UNDELIVERABLE: 10, S.EXPIRED: 10,
    S.SUPPRESSED: 10, S.INVALID: 10, S.CANCELLED: 10, S.READ: 11,
}
FINAL_RANK = 10
FINAL = tuple(status.value for status, rank in RANK.items() if rank >= FINAL_RANK)
#: What lets a batch settle: final statuses, and `fallback`, whose SMS is the provider's to report.
THROUGH = (*FINAL, S.FALLBACK.value)

#: Noxitel words (SMS `dlr.status` or its operator reply, RCS and WhatsApp report statuses), lower-cased.
NOXITEL: dict[Channel, dict[str, S | None]] = {
    Channel.SMS: {
        "pending": None, "submitted": S.SUBMITTED, "sent": S.SENT,
        "handset delivered": S.DELIVERED, "delivered": S.DELIVERED, "delivrd": S.DELIVERED,
        "undelivered": S.UNDELIVERABLE, "undeliv": S.UNDELIVERABLE, "failed": S.FAILED,
        "expired": S.EXPIRED, "rejected": S.REJECTED, "rejectd": S.REJECTED,
        "dlt template not registered": S.REJECTED,
    },
    Channel.RCS: {
        "pending": None, "sent": S.SENT, "delivered": S.DELIVERED, "read": S.READ, "failed": S.FAILED,
        "incompatible": S.UNDELIVERABLE,
    },
    Channel.WHATSAPP: {"sent": S.SENT, "delivered": S.DELIVERED, "read": S.READ, "failed": S.FAILED},
}

#: Pixabits events; a failure's kind is in the report's detail.
PIXABITS: dict[str, S] = {
    "sms.message.delivered": S.DELIVERED,
    "sms.message.failed": S.FAILED,
    "email.delivered": S.DELIVERED,
    "email.opened": S.READ,
    "email.clicked": S.READ,
    "email.bounced": S.FAILED,
    "rcs.message.delivered": S.DELIVERED,
    "rcs.message.read": S.READ,
    "rcs.fallback.triggered": S.FALLBACK,
    "wa.message.delivered": S.DELIVERED,
    "wa.message.read": S.READ,
}
PIXABITS_FAILURES: dict[str, S] = {
    "undeliv": S.UNDELIVERABLE,
    "expired": S.EXPIRED,
    "dlt_template_not_registered": S.REJECTED,
    "hard": S.UNDELIVERABLE,
}


def canonical(report: DeliveryReport, provider_fallback: bool = False) -> S | str | None:
    """The canonical status of a report; None when it says nothing new (pending); `"unknown"` when the word is new.

    `provider_fallback`: an RCS message reported `incompatible` was handed to
    the provider's own SMS fallback, so it is `fallback`, not undeliverable.
    """
    if report.provider == "pixabits":
        status = PIXABITS.get(report.status.lower())
        if status is S.FAILED and report.detail:
            return PIXABITS_FAILURES.get(report.detail.lower(), S.FAILED)
        return status if status is not None else "unknown"
    words = NOXITEL.get(report.channel, {})
    word = report.status.lower()
    if word not in words and report.detail:
        word = report.detail.lower()
    if word not in words:
        return "unknown"
    status = words[word]
    if status is S.UNDELIVERABLE and word == "incompatible" and provider_fallback:
        return S.FALLBACK
    return status


_staging_metadata = MetaData()
STAGING = Table(
    "dlr_staging",
    _staging_metadata,
    Column("address", String(320), primary_key=True),
    Column("status", String(16)),
    Column("rank", Integer),
    Column("detail", String(200)),
    prefixes=["TEMPORARY"],
)


def _rank_of(column: object) -> object:
    return case({status.value: rank for status, rank in RANK.items()}, value=column, else_=0)


def apply(
    engine: Engine,
    reports: Sequence[DeliveryReport],
    campaign_id: int,
    batch_id: int | None = None,
    provider_fallback: bool = False,
) -> Counter[str]:
    """Apply reports to the campaign's messages (matched by address, each address once per campaign).

    Returns how many reports carried each canonical status (and `unknown`),
    whether or not they changed a message: a report that only repeats or lags
    behind what is known changes nothing.
    """
    latest: dict[str, tuple[str, int, str | None]] = {}
    seen: Counter[str] = Counter()
    for report in reports:
        status = canonical(report, provider_fallback)
        if status is None:
            continue
        seen[str(status)] += 1
        if status == "unknown":
            log.warning("%s reported an unknown status %r (kept as it was)", report.provider, report.status)
            continue
        rank = RANK[status]
        known = latest.get(report.to)
        if known is None or rank > known[1]:
            latest[report.to] = (status.value, rank, report.detail)
    if not latest:
        return seen
    with engine.begin() as connection:
        _stage(connection, latest)
        M = models.Message.__table__
        current = _rank_of(M.c.status)
        statement = (
            update(M)
            .where(
                M.c.campaign_id == campaign_id,
                M.c.address == STAGING.c.address,
                STAGING.c.rank > current,
                (current < FINAL_RANK) | (M.c.status == S.DELIVERED.value),
            )
            .values(status=STAGING.c.status, status_at=now(), error=STAGING.c.detail)
        )
        if batch_id is not None:
            statement = statement.where(M.c.batch_id == batch_id)
        connection.execute(statement)
        _settle(connection, campaign_id, batch_id)
    return seen


def _stage(connection: Connection, latest: dict[str, tuple[str, int, str | None]]) -> None:
    STAGING.create(connection, checkfirst=True)
    connection.execute(text("DELETE FROM dlr_staging"))
    addresses = list(latest)
    values = [latest[a] for a in addresses]
    bulk_insert(connection, "dlr_staging", {
        "address": addresses,
        "status": [v[0] for v in values],
        "rank": [v[1] for v in values],
        "detail": [v[2] if v[0] in FINAL and v[0] != S.DELIVERED.value else None for v in values],
    })


def _settle(connection: Connection, campaign_id: int, batch_id: int | None) -> None:
    """A submitted batch whose every message is through is settled: nothing more will be asked about it."""
    B, M = models.Batch.__table__, models.Message.__table__
    open_message = exists().where(M.c.batch_id == B.c.id, M.c.status.not_in(THROUGH))
    statement = update(B).where(
        B.c.campaign_id == campaign_id, B.c.state == models.BatchState.SUBMITTED.value, ~open_message
    )
    if batch_id is not None:
        statement = statement.where(B.c.id == batch_id)
    connection.execute(statement.values(state=models.BatchState.SETTLED.value, settled_at=now()))


def apply_pushed(engine: Engine, reports: Sequence[DeliveryReport]) -> Counter[str]:
    """Apply pushed reports, which arrive without our campaign: matched by the provider's batch id where the
    push carries one (Noxitel SMS), else by number to the oldest message still open for it there."""
    B, M, C = models.Batch.__table__, models.Message.__table__, models.Campaign.__table__
    seen: Counter[str] = Counter()
    groups: dict[tuple[int, int | None], list[DeliveryReport]] = {}
    with engine.connect() as connection:
        for report in reports:
            if report.batch_id:
                found = connection.execute(select(B.c.campaign_id, B.c.id).where(
                    B.c.provider == report.provider, B.c.provider_batch_id == report.batch_id)).first()
            else:
                found = connection.execute(
                    select(M.c.campaign_id, M.c.batch_id)
                    .join(B, B.c.id == M.c.batch_id)
                    .where(M.c.address == report.to, B.c.provider == report.provider, M.c.status.not_in(THROUGH))
                    .order_by(M.c.id)
                    .limit(1)
                ).first()
            if found is None:
                seen["unmatched"] += 1
                log.warning("%s pushed a report for a message this database does not know", report.provider)
                continue
            groups.setdefault((found[0], found[1]), []).append(report)
        fallbacks = dict(connection.execute(select(C.c.id, C.c.fallback_template.is_not(None))).all())
    for (campaign_id, batch_id), group in groups.items():
        seen.update(apply(engine, group, campaign_id, batch_id, provider_fallback=fallbacks.get(campaign_id, False)))
    return seen
