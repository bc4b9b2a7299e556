"""Applying 1,000,000 delivery reports to the messages table, beside the per-message UPDATE loop.

The reports are Noxitel `/dlr` rows, read by the engine's own client. The
engine keeps each page (one batch, 50,000 reports) in `delivery_pages` and
applies it with one UPDATE joined to a staging table, as the poller does
(`engine.reports.statuses.apply_stream`): pages are written in threads while the next is
prepared, two at a time on PostgreSQL. The baseline runs one UPDATE per
report, on a sample, extrapolated. Both on SQLite and PostgreSQL, timed from
the parsed reports to the committed statuses (batches settle as part of it).

    python -m tests.benchmarks.bench_reconcile [--messages 1000000] [--sample 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import Engine, select, text, update

from engine.planning.planner import PlanContext, PlanRequest, build_plan, save_plan
from engine.planning.pricing import PriceTable
from engine.providers.base import DeliveryReport
from engine.providers.noxitel import sms_report
from engine.reports import statuses as dlr
from engine.store import models
from engine.store.db import open_database
from tests.benchmarks.bench_plan import postgres_database

#: What the sandbox (like Noxitel) says of a message: its status word and the operator's reply.
WORDS = (("Handset Delivered", "DELIVRD"), ("Undelivered", "UNDELIV"), ("Expired", "EXPIRED"))


def word(i: int) -> tuple[str, str]:
    """80% delivered, 15% undelivered, 5% expired, spread through every page."""
    return WORDS[2] if i % 20 == 19 else WORDS[1] if i % 10 in (8, 9) else WORDS[0]


def planned(url: str, path: Path) -> tuple[Engine, int]:
    """A saved campaign whose messages are all submitted, as after sending."""
    engine = open_database(url)
    request = PlanRequest(contacts=path, channel="sms", provider="noxitel", message="Sale today", sender="ACMEIN")
    campaign_id = save_plan(engine, build_plan(request, PlanContext(prices=PriceTable.load())))
    with engine.begin() as connection:
        connection.execute(update(models.Message).values(status="submitted"))
        connection.execute(update(models.Batch).values(state="submitted"))
    return engine, campaign_id


def pages(engine: Engine) -> list[tuple[int, list[DeliveryReport]]]:
    """Each batch's report page: `/dlr` rows as Noxitel returns them, read by the engine's own client."""
    messages = models.Message.__table__
    with engine.connect() as connection:
        rows = connection.execute(select(messages.c.batch_id, messages.c.address).order_by(messages.c.id)).all()
    by_batch: dict[int, list[DeliveryReport]] = {}
    for i, (batch_id, address) in enumerate(rows):
        status, reply = word(i)
        row = {
            "sms_shoot_id": f"user_{i:x}",
            "mobile": int(address[1:]),
            "sender_id": "ACMEIN",
            "sent": "2026-11-23 10:00:00",
            "dlr": {"status": status, "operator_reply": reply, "delivery_time": f"2026-11-23 10:{i % 60:02}:07"},
        }
        by_batch.setdefault(batch_id, []).append(sms_report(row, f"nx{batch_id}"))
    return list(by_batch.items())


def engine_apply(engine: Engine, campaign_id: int) -> tuple[float, int]:
    work = pages(engine)

    async def stream() -> AsyncIterator[dlr.PolledPage]:
        for batch_id, reports in work:
            yield dlr.PolledPage(campaign_id, batch_id, reports, False)

    started = time.perf_counter()
    asyncio.run(dlr.apply_stream(engine, stream()))
    elapsed = time.perf_counter() - started
    with engine.connect() as connection:
        left = connection.execute(text("SELECT count(*) FROM messages WHERE status = 'submitted'")).scalar_one()
    if left:
        raise RuntimeError(f"{left} messages were not updated")
    return elapsed, sum(len(r) for _, r in work)


def per_message(engine: Engine, sample: int) -> float:
    """One UPDATE per report, found by its batch and number: the straightforward version."""
    work = [(batch_id, r) for batch_id, reports in pages(engine) for r in reports][:sample]
    messages = models.Message.__table__
    started = time.perf_counter()
    with engine.begin() as connection:
        for batch_id, report in work:
            status = dlr.canonical(report)
            connection.execute(
                update(messages)
                .where(messages.c.batch_id == batch_id, messages.c.address == report.to)
                .values(status=str(status))
            )
    return (time.perf_counter() - started) / len(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=5_000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "contacts.csv"
        pa_csv.write_csv(pa.table({"mobile": (7_000_000_000 + np.arange(args.messages)).astype(str)}), str(path))
        sample_path = Path(folder) / "sample.csv"
        pa_csv.write_csv(pa.table({"mobile": (7_000_000_000 + np.arange(args.sample)).astype(str)}), str(sample_path))
        pg_url, drop = postgres_database()
        pg_sample_url, drop_sample = postgres_database()
        try:
            for name, url, sample_url in (
                ("SQLite", f"sqlite:///{folder}/big.db", f"sqlite:///{folder}/sample.db"),
                ("PostgreSQL", pg_url, pg_sample_url),
            ):
                engine, campaign_id = planned(url, path)
                seconds, count = engine_apply(engine, campaign_id)
                engine.dispose()
                sample_engine, _ = planned(sample_url, sample_path)
                each = per_message(sample_engine, args.sample)
                sample_engine.dispose()
                rows.append((name, count, seconds, each * count))
        finally:
            drop()
            drop_sample()
    print(f"{args.messages:,} reports in pages of one batch; the per-message loop on {args.sample:,}, extrapolated")
    print(f"{'database':12} {'engine s':>9} {'reports/s':>11} {'per-message s':>14} {'ratio':>7}")
    for name, count, seconds, loop in rows:
        print(f"{name:12} {seconds:9.2f} {count / seconds:11,.0f} {loop:14.1f} {loop / seconds:6.1f}x")


if __name__ == "__main__":
    main()
