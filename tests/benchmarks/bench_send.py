"""Sending a 1,000,000-recipient SMS campaign to the sandbox (its own process, Premium plan).

Three figures, measured in the same run, in messages submitted per second with
the provider's ids stored:
  * local mode on SQLite (one process, asyncio, in-process throttle);
  * two Celery worker processes on PostgreSQL (Redis broker and throttle);
  * the common design, one Celery task and one HTTP request per message, on a
    sample, with the same two worker processes and database.
Planning is done before the clock starts; the clock stops when the last batch
is recorded as submitted.

    python -m tests.benchmarks.bench_send [--messages 1000000] [--sample 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from redis import Redis
from sqlalchemy import func, select

from engine.campaigns.lifecycle import start, state_of, status
from engine.local import local_sender, send_campaign
from engine.planning.planner import PlanContext, PlanRequest, build_plan, save_plan
from engine.planning.pricing import PriceTable
from engine.settings import Settings
from engine.store import models
from engine.store.db import open_database
from tests.benchmarks.bench_plan import postgres_database
from tests.fixtures.sandbox import read_banner
from workers.app import QUEUES, make_app

POSTGRES = os.environ.get("CAMPAIGN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("CAMPAIGN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def contacts(path: Path, count: int) -> Path:
    numbers = (7_000_000_000 + np.arange(count)).astype(str)
    pa_csv.write_csv(pa.table({"name": np.full(count, "Asha"), "mobile": numbers}), str(path))
    return path


def plan(url: str, path: Path) -> int:
    engine = open_database(url)
    request = PlanRequest(
        contacts=path,
        channel="sms",
        provider="pixabits",
        sender="ACMEIN",
        message="Hi #name#, our sale ends tonight at ACME",
    )
    campaign_id = save_plan(engine, build_plan(request, PlanContext(prices=PriceTable.load())))
    engine.dispose()
    return campaign_id


def start_process(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    return process, read_banner(process)


def start_workers(app: str, env: dict[str, str], queues: str, count: int = 2) -> list[subprocess.Popen[bytes]]:
    workers = []
    for n in range(count):
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    app,
                    "worker",
                    "-Q",
                    queues,
                    "-c",
                    "1",
                    "--without-gossip",
                    "--without-mingle",
                    "-n",
                    f"bench{n}-{uuid.uuid4().hex[:4]}@%h",
                    "-l",
                    "warning",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return workers


def wait_until(condition, timeout: float = 1800) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark did not finish in time")
        time.sleep(0.05)


def stop(processes: list[subprocess.Popen]) -> None:  # type: ignore[type-arg]
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(30)


def flush(prefix: str) -> None:
    client = Redis.from_url(REDIS)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def bench_local(sandbox_url: str, path: Path, workdir: Path) -> float:
    url = f"sqlite:///{workdir / 'local.db'}"
    campaign_id = plan(url, path)
    settings = Settings(database_url=url, pixabits_base_url=sandbox_url, pixabits_plan="premium")
    engine = open_database(url)

    async def run() -> None:
        async with local_sender(engine, settings, "pixabits") as sender:
            start(engine, campaign_id)
            await send_campaign(engine, sender, campaign_id, concurrency=settings.send_concurrency)

    began = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - began
    check_sent(engine, campaign_id)
    engine.dispose()
    return elapsed


def check_sent(engine, campaign_id: int) -> None:  # type: ignore[no-untyped-def]
    """Every message submitted and every batch holding the provider's batch id, or the figure means nothing."""
    batches = models.Batch.__table__
    current = status(engine, campaign_id)
    with engine.connect() as connection:
        missing = connection.execute(
            select(func.count()).where(batches.c.campaign_id == campaign_id, batches.c.provider_batch_id.is_(None))
        ).scalar_one()
    if current.counts != {"submitted": current.messages} or missing:
        raise RuntimeError(f"campaign {campaign_id} not fully sent: {current.counts}, {missing} batches without ids")


def bench_celery(sandbox_url: str, path: Path) -> float:
    url, drop = postgres_database()
    prefix = f"bench:{os.getpid()}:engine:"
    env = {
        **os.environ,
        "CAMPAIGN_DATABASE_URL": url,
        "CAMPAIGN_BROKER_URL": REDIS,
        "CAMPAIGN_BROKER_PREFIX": prefix,
        "PIXABITS_BASE_URL": sandbox_url,
        "PIXABITS_PLAN": "premium",
        "NOXITEL_BASE_URL": sandbox_url + "/api/v2",
    }
    workers = start_workers("workers.app", env, ",".join(QUEUES))
    app = make_app(Settings(broker_url=REDIS, broker_prefix=prefix))
    try:
        campaign_id = plan(url, path)
        engine = open_database(url)
        app.send_task("campaign.sweep").get(timeout=120)  # both workers are up and connected
        began = time.perf_counter()
        start(engine, campaign_id)
        app.send_task("campaign.start_campaign", args=(campaign_id,))
        wait_until(lambda: state_of(engine, campaign_id) == "completed")
        elapsed = time.perf_counter() - began
        check_sent(engine, campaign_id)
        engine.dispose()
        return elapsed
    finally:
        stop(workers)
        flush(prefix)
        drop()


def bench_per_message(sandbox_url: str, path: Path) -> float:
    url, drop = postgres_database()
    prefix = f"bench:{os.getpid()}:naive:"
    env = {
        **os.environ,
        "CAMPAIGN_DATABASE_URL": url,
        "CAMPAIGN_BROKER_URL": REDIS,
        "CAMPAIGN_BROKER_PREFIX": prefix,
        "PIXABITS_BASE_URL": sandbox_url,
        "PIXABITS_API_KEY": "sandbox",
    }
    workers = start_workers("tests.benchmarks.per_message", env, "celery")
    os.environ.update({"CAMPAIGN_BROKER_PREFIX": prefix})
    from tests.benchmarks.per_message import app

    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    try:
        campaign_id = plan(url, path)
        engine = open_database(url)
        messages = models.Message.__table__
        with engine.connect() as connection:
            ids = connection.execute(select(messages.c.id).where(messages.c.campaign_id == campaign_id)).scalars().all()

        def done() -> bool:
            with engine.connect() as connection:
                return connection.execute(
                    select(func.count()).where(messages.c.status == "submitted")
                ).scalar_one() == len(ids)

        began = time.perf_counter()
        for message_id in ids:
            app.send_task("bench.send_one", args=(message_id,))
        wait_until(done)
        elapsed = time.perf_counter() - began
        engine.dispose()
        return elapsed
    finally:
        stop(workers)
        flush(prefix)
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=3_000)
    args = parser.parse_args()
    sandbox, sandbox_url = start_process(
        [
            sys.executable,
            "-m",
            "engine",
            "sandbox",
            "--port",
            "0",
            "--plan",
            "premium",
            "--dlr-delay",
            "86400",
            "--credits",
            "1e9",
        ]
    )
    try:
        with tempfile.TemporaryDirectory() as folder:
            workdir = Path(folder)
            path = contacts(workdir / "contacts.csv", args.messages)
            sample = contacts(workdir / "sample.csv", args.sample)
            local = bench_local(sandbox_url, path, workdir)
            celery = bench_celery(sandbox_url, path)
            naive = bench_per_message(sandbox_url, sample)
    finally:
        stop([sandbox])
    rows = [
        (f"local mode, SQLite ({args.messages:,})", args.messages, local),
        (f"2 Celery workers, PostgreSQL ({args.messages:,})", args.messages, celery),
        (f"task + request per message ({args.sample:,} sample)", args.sample, naive),
    ]
    rate = {name: count / seconds for name, count, seconds in rows}
    naive_rate = rate[rows[2][0]]
    print(f"{'design':52} {'seconds':>8} {'messages/s':>12} {'vs per-message':>15}")
    for name, _, seconds in rows:
        print(f"{name:52} {seconds:8.2f} {rate[name]:12,.0f} {rate[name] / naive_rate:14.0f}x")
    print(f"local mode / Celery: {rate[rows[0][0]] / rate[rows[1][0]]:.2f}")


if __name__ == "__main__":
    main()
