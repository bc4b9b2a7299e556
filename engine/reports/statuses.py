"""Delivery reports: the providers' words as canonical statuses, applied to messages in one statement.

Statuses only move forward: a late `sent` never overwrites `delivered`, `read`
outranks `delivered`, and any other final status is final. The rank lives in
SQL (a CASE over the status), so a page of 50,000 reports is applied with one
UPDATE joined to a staging table, not one UPDATE per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

import numpy as np
import orjson
import zstandard
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from engine.clock import now
from engine.providers import client_class
from engine.providers.base import Channel, DeliveryReport
from engine.reports import pushed
from engine.store import models
from engine.store.db import bulk_insert
from engine.store.states import (
    FINAL,
    FINAL_RANK,
    RANK,
    REACHED,
    SETTLEABLE,
    THROUGH,
    UNKNOWN,
    BatchState,
    MessageStatus,
)

log = logging.getLogger(__name__)
S = MessageStatus


def canonical(report: DeliveryReport, provider_fallback: bool = False) -> S | str | None:
    """The canonical status of a report, in its provider's words (`Provider.canonical_status`); None when it
    says nothing new (pending), `UNKNOWN` when the word is new."""
    return client_class(report.provider).canonical_status(report, provider_fallback)


_staging_metadata = MetaData()
#: The best report of each number in a polled page, joined by one UPDATE of `messages`. PostgreSQL empties
#: it at commit, so the DELETE before each page finds nothing to do there.
REPORT_STAGING = Table(
    "report_staging",
    _staging_metadata,
    Column("address", String(320)),
    Column("status", String(16)),
    Column("rank", Integer),
    Column("error", Text),
    Column("cost", Float),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)
#: Pushed events' best status per message, joined by one UPDATE of `messages`.
FOLD_STAGING = Table(
    "fold_staging",
    _staging_metadata,
    Column("message_id", BigInteger, primary_key=True),
    Column("batch_id", BigInteger),
    Column("status", String(16)),
    Column("rank", Integer),
    Column("detail", String(200)),
    Column("provider_message_id", String(200)),
    Column("cost", Float),
    prefixes=["TEMPORARY"],
)
M, B, E, P = (
    models.MESSAGES,
    models.BATCHES,
    models.DELIVERY_EVENTS,
    models.DELIVERY_PAGES,
)
#: Unprocessed pushed events applied per round.
PAGE = 10_000
#: How `delivery_pages.fingerprints` holds each one.
FINGERPRINT = np.dtype("<i8")


def _rank_of(column: Any) -> Any:
    return case({status.value: rank for status, rank in RANK.items()}, value=column, else_=0)


def _forward(staged_rank: Any) -> Any:
    """Only forward: a higher rank than the message's, and the message not final (but `read` after `delivered`)."""
    current = _rank_of(M.c.status)
    return and_(staged_rank > current, or_(current < FINAL_RANK, M.c.status == S.DELIVERED.value))


def _error(status: str, detail: str | None) -> str | None:
    """A failure's detail is its error; a delivered (or read) message has none."""
    return detail if status in FINAL and status not in REACHED else None


@dataclass
class Page:
    """A polled page judged, hashed and laid out in columns, ready to be written: all the Python work of applying it.

    `best` holds the staging columns of each number's highest-ranked report. A
    report that says nothing new (pending) or that the engine cannot read is
    staged as `submitted`: it is still the provider's word that it has the
    message, which is what an `ambiguous` one waits for.
    """

    reports: Sequence[DeliveryReport]
    statuses: list[str | None]
    fingerprints: list[int]
    best: dict[str, list[Any]]
    seen: Counter[str]
    #: The whole page as `delivery_pages.events`, for when none of it was kept before (the usual case).
    document: bytes


def prepare(reports: Sequence[DeliveryReport], provider_fallback: bool = False) -> Page:
    """Canonical status of each report, which report of each number is its best, and the page as stored."""
    words: dict[tuple[str, str, str | None], tuple[str | None, int, str | None, bool]] = {}
    statuses: list[str | None] = []
    best: dict[str, tuple[int, int]] = {}
    for i, report in enumerate(reports):
        key = (report.channel, report.status, report.detail)
        known = words.get(key)
        if known is None:  # a page holds a handful of distinct words: each is read once
            status = canonical(report, provider_fallback)
            if status == UNKNOWN:
                log.warning("%s reported an unknown status %r (kept as it was)", report.provider, report.status)
            word = None if status is None or status == UNKNOWN else str(status)
            rank = RANK[S(word)] if word else RANK[S.SUBMITTED]
            known = words[key] = (word, rank, _error(word, report.detail) if word else None, status == UNKNOWN)
        statuses.append(known[0])
        held = best.get(report.to)
        if held is None or known[1] > held[0]:
            best[report.to] = (known[1], i)
    chosen = [reports[i] for _, i in best.values()]
    judged = [words[(r.channel, r.status, r.detail)] for r in chosen]
    staged: dict[str, list[Any]] = {
        "address": list(best),
        "status": [word or S.SUBMITTED.value for word, _, _, _ in judged],
        "rank": [rank for _, rank, _, _ in judged],
        "error": [error for _, _, error, _ in judged],
        "cost": [r.cost for r in chosen],
    }
    fingerprints = pushed.fingerprints(reports)
    return Page(reports, statuses, fingerprints, staged, _seen(reports, words), _document(reports, statuses))


def _document(reports: Sequence[DeliveryReport], statuses: Sequence[str | None]) -> bytes:
    """The reports as `delivery_pages.events`: one array per field (lists serialize in C, unlike a row each),
    compressed (zstd's fastest level made the benchmark's pages 60 times smaller in a few milliseconds)."""
    return zstandard.compress(
        orjson.dumps(
            {
                "to": [r.to for r in reports],
                "status": [r.status for r in reports],
                "detail": [r.detail for r in reports],
                "message_id": [r.message_id for r in reports],
                "batch_id": [r.batch_id for r in reports],
                "occurred_at": [r.occurred_at for r in reports],
                "canonical": statuses,
                "raw": [r.raw or None for r in reports],
            },
            default=dict,
        ),
        level=1,
    )


def write(engine: Engine, page: Page, campaign_id: int, batch_id: int) -> Counter[str]:
    """Keep the reports earlier polls of the batch did not return, and apply each number's best, in one transaction.

    The batch's row is written first: on both databases that makes one writer
    at a time per batch, so two pollers cannot both find the same report new.
    A page with nothing new was applied when it was first kept, and is done
    with at that. Each report's message is found by its number within the
    batch (`+ 0` keeps SQLite, which has no statistics here, on the address
    index rather than walking the batch's).
    """
    if not page.reports:
        return page.seen
    staged = REPORT_STAGING
    with engine.begin() as connection:
        connection.execute(text("UPDATE batches SET state = state WHERE id = :id"), {"id": batch_id})
        document = _new_reports(connection, page, batch_id)
        if document is None:
            return page.seen
        count, fingerprints, reports = document
        connection.execute(
            insert(P).values(
                campaign_id=campaign_id,
                batch_id=batch_id,
                provider=page.reports[0].provider,
                channel=page.reports[0].channel.value,
                reports=count,
                received_at=now(),
                fingerprints=fingerprints,
                events=reports,
            )
        )
        _stage(connection, page.best)
        in_batch = M.c.batch_id + 0 if connection.dialect.name == "sqlite" else M.c.batch_id
        connection.execute(
            update(M)
            .where(
                in_batch == batch_id,
                M.c.address == staged.c.address,
                or_(_forward(staged.c.rank), M.c.status == S.AMBIGUOUS.value),
            )
            .values(
                status=staged.c.status,
                status_at=now(),
                error=staged.c.error,
                cost=func.coalesce(staged.c.cost, M.c.cost),
            )
        )
        _settle(connection, B.c.id == batch_id)
    return page.seen


def _stage(connection: Connection, best: dict[str, list[Any]]) -> None:
    """Load each number's best report into the connection's `report_staging` (emptied first).

    SQLite is given the rows as one JSON array and unpacks them itself: one
    statement, during which the driver lets go of the GIL, so the next page is
    prepared meanwhile (binding row by row, the two threads took turns).
    """
    REPORT_STAGING.create(connection, checkfirst=True)
    connection.execute(text("DELETE FROM report_staging"))
    if connection.dialect.name != "sqlite":
        bulk_insert(connection, "report_staging", best)
        return
    fields = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(best)))
    connection.exec_driver_sql(
        f"INSERT INTO report_staging ({', '.join(best)}) SELECT {fields} FROM json_each(?)",
        (orjson.dumps(list(zip(*best.values(), strict=True))).decode(),),
    )


def _new_reports(connection: Connection, page: Page, batch_id: int) -> tuple[int, bytes, bytes] | None:
    """The page's reports that no earlier page of the batch holds (each once): their count, fingerprints and
    document; None when there are none."""
    stored = connection.execute(select(P.c.fingerprints).where(P.c.batch_id == batch_id)).scalars().all()
    kept = np.frombuffer(b"".join(stored), dtype=FINGERPRINT)
    hashes = np.asarray(page.fingerprints, dtype=FINGERPRINT)
    _, first = np.unique(hashes, return_index=True)
    fresh = np.sort(first[~np.isin(hashes[first], kept)])
    if len(fresh) == len(hashes):
        return len(hashes), hashes.tobytes(), page.document
    if not len(fresh):
        return None
    chosen = fresh.tolist()
    document = _document([page.reports[i] for i in chosen], [page.statuses[i] for i in chosen])
    return len(chosen), hashes[fresh].tobytes(), document


def apply(
    engine: Engine,
    reports: Sequence[DeliveryReport],
    campaign_id: int,
    batch_id: int,
    provider_fallback: bool = False,
) -> Counter[str]:
    """Keep a polled page of a batch's reports and apply it to the messages (matched by number within the batch).

    Every report is kept once (one the provider returns again is not kept
    again); then the best status per number is applied in one forward-only
    UPDATE. Returns how many reports carried each canonical status (and
    `unknown`), whether or not they changed a message: a report that only
    repeats or lags behind what is known changes nothing.
    """
    return write(engine, prepare(reports, provider_fallback), campaign_id, batch_id)


class PolledPage(NamedTuple):
    """One batch's page of reports, as the poller fetched it."""

    campaign_id: int
    batch_id: int
    reports: Sequence[DeliveryReport]
    provider_fallback: bool


#: Pages PostgreSQL writes while the next is prepared, each on its own connection: a statement runs on one
#: core of the server, and two pages in flight keep two busy. SQLite, which runs in this process and has
#: one writer, writes one page while the next is prepared (both measured in tests/benchmarks/RESULTS.md).
WRITERS = 2


async def apply_stream(engine: Engine, pages: AsyncIterable[PolledPage]) -> Counter[str]:
    """Apply pages as they come, each written in a thread while the event loop fetches and prepares the next.

    Pages of different batches touch different rows, and two of one batch
    take turns on its row, so they may be written side by side. A page in
    writing when the stream fails is still written.
    """
    seen: Counter[str] = Counter()
    writing: set[asyncio.Task[Counter[str]]] = set()
    room = WRITERS if engine.dialect.name == "postgresql" else 1
    try:
        async for campaign_id, batch_id, reports, provider_fallback in pages:
            page = prepare(reports, provider_fallback)
            writing.add(asyncio.create_task(asyncio.to_thread(write, engine, page, campaign_id, batch_id)))
            await _written(writing, seen, room)
        await _written(writing, seen, 0)
    finally:
        if writing:
            await asyncio.gather(*writing, return_exceptions=True)
    return seen


async def _written(writing: set[asyncio.Task[Counter[str]]], seen: Counter[str], left: int) -> None:
    """Wait until no more than `left` pages are still being written, counting what the written ones saw."""
    while len(writing) > left:
        done, _ = await asyncio.wait(writing, return_when=asyncio.FIRST_COMPLETED)
        writing.difference_update(done)
        for task in done:
            seen.update(task.result())


def _seen(reports: Sequence[DeliveryReport], words: dict[Any, tuple[str | None, Any, Any, bool]]) -> Counter[str]:
    """How many reports carried each canonical status, `unknown` for words the engine does not know."""
    counts: Counter[str] = Counter()
    for key, count in Counter((r.channel, r.status, r.detail) for r in reports).items():
        word, _, _, unknown = words[key]
        if word is not None or unknown:
            counts[word or UNKNOWN] += count
    return counts


def _settle(connection: Connection, which: Any) -> None:
    """A submitted (or ambiguous) batch whose every message is through is settled: nothing more will be asked
    about it."""
    open_message = exists().where(M.c.batch_id == B.c.id, M.c.status.not_in(THROUGH))
    connection.execute(
        update(B)
        .where(which, B.c.state.in_(SETTLEABLE), ~open_message)
        .values(state=BatchState.SETTLED.value, settled_at=now())
    )


def store_pushed(engine: Engine, reports: Sequence[DeliveryReport]) -> int:
    """Keep pushed reports, unmatched and unprocessed, for `apply_pending`; returns how many were new."""
    if not reports:
        return 0
    words = [canonical(r) for r in reports]
    statuses = [None if w is None or w == UNKNOWN else str(w) for w in words]
    with engine.begin() as connection:
        pushed.stage(connection, pushed.columns(reports, statuses))
        return pushed.keep_staged(connection)


@dataclass
class Applied:
    """What one round of `apply_pending` did: statuses seen, campaigns touched, events parked or given up."""

    counts: Counter[str] = field(default_factory=Counter)
    campaigns: set[int] = field(default_factory=set)
    #: Events taken from the queue this round (a full page means more may wait).
    events: int = 0
    parked: int = 0
    abandoned: int = 0


#: Key of the PostgreSQL advisory lock that lets one process at a time apply stored events.
APPLY_LOCK = 0x636D5F646C72  # "cm_dlr"


def apply_pending(engine: Engine, max_age: timedelta) -> Applied:
    """Match unprocessed (pushed or parked) events to their messages and fold them into the messages' statuses.

    Events that match nothing stay parked for the next round; those older than
    `max_age` are given up (kept, marked processed, without a message). One
    process at a time does this (the receiver and the beat poller both may):
    on PostgreSQL a transaction-scoped advisory lock orders them; SQLite
    has one writer anyway.
    """
    applied = Applied()
    moment = now()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(APPLY_LOCK)))
        pushed.match(connection, moment - max_age)
        rows = connection.execute(
            select(
                E.c.fingerprint,
                E.c.message_id,
                E.c.campaign_id,
                E.c.status,
                E.c.provider,
                E.c.provider_status,
                E.c.detail,
                E.c.provider_message_id,
                E.c.cost,
                E.c.channel,
                B.c.channel.label("batch_channel"),
                B.c.provider_fallback,
                M.c.batch_id,
            )
            .join(M, M.c.id == E.c.message_id)
            .join(B, B.c.id == M.c.batch_id)
            .where(~E.c.processed)
            .order_by(E.c.received_at, E.c.fingerprint)
            .limit(PAGE)
        ).all()
        applied.events = len(rows)
        if rows:
            applied.counts = _fold(connection, rows)
            applied.campaigns = {row.campaign_id for row in rows}
            ids = [row.fingerprint for row in rows]
            for start in range(0, len(ids), 1000):
                connection.execute(
                    update(E).where(E.c.fingerprint.in_(ids[start : start + 1000])).values(processed=True)
                )
            _settle(connection, B.c.id.in_({row.batch_id for row in rows}))
        applied.abandoned = connection.execute(
            update(E)
            .where(~E.c.processed, E.c.message_id.is_(None), E.c.received_at < moment - max_age)
            .values(processed=True)
        ).rowcount
        applied.parked = connection.execute(
            select(func.count()).select_from(E).where(~E.c.processed, E.c.message_id.is_(None))
        ).scalar_one()
    if applied.abandoned:
        log.warning("%d pushed reports matched no message within %s; given up", applied.abandoned, max_age)
    return applied


def _judged_with_fallback(row: Any) -> str:
    """A stored report judged again now its batch is known to have asked for the provider's own SMS fallback
    (a push is judged when it comes, before it is matched to its batch)."""
    report = DeliveryReport(row.provider, Channel(row.channel), "", row.provider_status, row.detail)
    return str(canonical(report, provider_fallback=True) or row.status)


def _fold(connection: Connection, rows: Sequence[Any]) -> Counter[str]:
    """The best status each message's events carry, applied forward-only in one UPDATE."""
    seen: Counter[str] = Counter()
    best: dict[int, tuple[str, int, str | None, str | None, float | None, int]] = {}
    for row in rows:
        status = row.status
        if status is None:
            seen[UNKNOWN] += 1
            continue
        if row.channel != row.batch_channel:  # about an earlier attempt (RCS before its SMS fallback): kept only
            continue
        if row.provider_fallback and status == S.UNDELIVERABLE:
            status = _judged_with_fallback(row)  # the provider may be sending the SMS itself
        seen[status] += 1
        rank = RANK[S(status)]
        known = best.get(row.message_id)
        if known is None or rank > known[1]:
            pmid = row.provider_message_id or (known[3] if known else None)
            best[row.message_id] = (status, rank, row.detail, pmid, row.cost, row.batch_id)
    if not best:
        return seen
    FOLD_STAGING.create(connection, checkfirst=True)
    connection.execute(text("DELETE FROM fold_staging"))
    ids = list(best)
    values = [best[i] for i in ids]
    bulk_insert(
        connection,
        "fold_staging",
        {
            "message_id": ids,
            "batch_id": [v[5] for v in values],
            "status": [v[0] for v in values],
            "rank": [v[1] for v in values],
            "detail": [_error(v[0], v[2]) for v in values],
            "provider_message_id": [v[3] for v in values],
            "cost": [v[4] for v in values],
        },
    )
    F = FOLD_STAGING
    connection.execute(
        update(M)
        # Still in the batch its events were judged for: a message moved meanwhile (to its SMS
        # fallback) is not given its earlier attempt's news; PostgreSQL re-checks this on a row
        # another transaction just changed.
        .where(M.c.id == F.c.message_id, M.c.batch_id == F.c.batch_id, _forward(F.c.rank))
        .values(
            status=F.c.status,
            status_at=now(),
            error=F.c.detail,
            provider_message_id=func.coalesce(M.c.provider_message_id, F.c.provider_message_id),
            cost=func.coalesce(F.c.cost, M.c.cost),
        )
    )
    return seen
