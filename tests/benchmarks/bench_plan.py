"""Planning a large contact file end to end, against the straightforward per-row version.

    .venv/bin/python -m tests.benchmarks.bench_plan [--rows 1000000] [--sample 20000] [--no-postgres]

Generates a contact CSV (names, mobiles written the usual ways, about 2% bad
numbers and 1% duplicates), then times the whole plan persisted (read,
normalize, dedupe, render, DLT check, segments, batches, cost, insert) on a new
SQLite file and on a new PostgreSQL database; and, in the same run, the per-row
version (csv module, phonenumbers per row, re.sub, single-row INSERTs) on a
sample, extrapolated to the full size. Both must plan the same messages for the
sample's rows, or the comparison would be of two different jobs.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.csv as pa_csv
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from engine import gsm
from engine.planning.dlt import default_registry
from engine.planning.planner import PlanContext, PlanRequest, build_plan, save_plan
from engine.planning.pricing import PriceTable
from engine.store.db import make_engine, open_database, upgrade

MESSAGE = "Hi #name#, your order #order# has shipped and will reach you by #day#. -ACME"
TEMPLATE_ID = "1207161234567890123"
POSTGRES_URL = os.environ.get("CAMPAIGN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def generate(path: Path, rows: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    national = rng.integers(6_000_000_000, 10_000_000_000, rows).astype(str)
    duplicate = rng.random(rows) < 0.01
    national[duplicate] = national[rng.integers(0, rows, duplicate.sum())]
    broken = rng.random(rows) < 0.01
    national[broken] = np.char.add("12345", national[broken].astype("U5"))
    prefix = rng.choice(np.array(["", "+91 ", "0", "91", "+91"]), rows, p=[0.4, 0.25, 0.1, 0.1, 0.15])
    mobiles = np.char.add(prefix, national)
    names = rng.choice(np.array(["Aarav", "Diya", "Rohan", "Priya", "Kabir", "Meera", "Arjun", "Sneha"]), rows)
    orders = np.char.add("ORD", rng.integers(100_000, 999_999, rows).astype(str))
    days = rng.choice(np.array(["Monday", "Tuesday", "Friday", "Sunday"]), rows)
    table = pa.table({"Name": names, "Mobile Number": mobiles, "Order": orders, "Day": days})
    pa_csv.write_csv(table, str(path))


def engine_plan(path: Path, url: str) -> tuple[float, float, np.ndarray]:
    """Seconds to plan and to persist, and the file line of each message planned."""
    engine = open_database(url)
    template = next(t for t in default_registry() if t.template_id == TEMPLATE_ID)
    started = time.perf_counter()
    request = PlanRequest(
        contacts=path, channel="sms", provider="noxitel", message=MESSAGE, sender="ACMEIN", dlt_template=template
    )
    plan = build_plan(request, PlanContext(prices=PriceTable.load()))
    planned = time.perf_counter()
    save_plan(engine, plan)
    persisted = time.perf_counter()
    engine.dispose()
    return planned - started, persisted - planned, plan.contacts.file.lines[plan.rows]


def per_row_plan(path: Path, sample: int, database: Path) -> tuple[float, int]:
    """The obvious implementation: one Python step per row, one INSERT per message; seconds and messages."""
    template = next(t for t in default_registry() if t.template_id == TEMPLATE_ID)
    dlt = re.compile("^" + ".{0,30}".join(re.escape(p) for p in re.split(r"\{#var#\}", template.text)) + "$", re.DOTALL)
    started = time.perf_counter()
    connection = sqlite3.connect(database)
    connection.execute(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, line INTEGER, address TEXT, body TEXT, segments INTEGER)"
    )
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for line, row in enumerate(reader, start=2):
            if line - 1 > sample:
                break
            try:
                number = phonenumbers.parse(row["Mobile Number"], "IN")
            except phonenumbers.NumberParseException:
                continue
            if not phonenumbers.is_valid_number(number) or phonenumbers.number_type(number) not in (
                phonenumbers.PhoneNumberType.MOBILE,
                phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
            ):
                continue
            address = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            values = {"name": row["Name"], "order": row["Order"], "day": row["Day"]}
            body = re.sub(r"#(\w+)#", lambda m, values=values: values[m.group(1)], MESSAGE)
            if not dlt.match(re.sub(r"\s+", " ", body).strip()) or address in seen:
                continue
            seen.add(address)
            connection.execute(
                "INSERT INTO messages (line, address, body, segments) VALUES (?, ?, ?, ?)",
                (line, address, body, gsm.segments(body)),
            )
    connection.commit()
    (messages,) = connection.execute("SELECT count(*) FROM messages").fetchone()
    connection.close()
    return time.perf_counter() - started, messages


def postgres_database() -> tuple[str, Callable[[], None]]:
    """A new, migrated PostgreSQL database of the benchmark's own, and the function that drops it."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"campaign_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000, help="rows for the per-row baseline")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        contacts = work / "contacts.csv"
        generate(contacts, args.rows)
        console.print(f"{args.rows:,} rows, {contacts.stat().st_size / 1e6:.1f} MB")

        sqlite_url = f"sqlite:///{work / 'campaigns.db'}"
        open_database(sqlite_url).dispose()
        plan_seconds, persist_seconds, lines = engine_plan(contacts, sqlite_url)
        messages = len(lines)
        results = [("engine, SQLite", plan_seconds, persist_seconds)]
        if not args.no_postgres:
            url, drop = postgres_database()
            try:
                results.append(("engine, PostgreSQL", *engine_plan(contacts, url)[:2]))
            finally:
                drop()
        sample = min(args.sample, args.rows)
        per_row_seconds, per_row_messages = per_row_plan(contacts, sample, work / "per_row.db")
        baseline = per_row_seconds * args.rows / sample
        engine_messages = int((lines <= sample + 1).sum())  # the header is line 1
        if engine_messages != per_row_messages:
            raise SystemExit(
                f"the engine plans {engine_messages:,} messages for the first {sample:,} rows, "
                f"the per-row version {per_row_messages:,}"
            )

    table = Table(
        title=f"Planning {args.rows:,} rows ({messages:,} messages planned; "
        f"{engine_messages:,} of the first {sample:,} rows by both versions)"
    )
    for column in ("version", "plan s", "persist s", "total s", "µs / row", "vs per-row"):
        table.add_column(column, justify="left" if column == "version" else "right")
    for label, plan_seconds, persist_seconds in results:
        total = plan_seconds + persist_seconds
        table.add_row(
            label,
            f"{plan_seconds:.2f}",
            f"{persist_seconds:.2f}",
            f"{total:.2f}",
            f"{total / args.rows * 1e6:.2f}",
            f"{baseline / total:.1f}x",
        )
    table.add_row(
        f"per-row, SQLite ({sample:,} rows, extrapolated)",
        "",
        "",
        f"{baseline:.2f}",
        f"{baseline / args.rows * 1e6:.2f}",
        "1.0x",
    )
    console.print(table)


if __name__ == "__main__":
    main()
