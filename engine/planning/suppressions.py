"""The suppression list: addresses that must never be messaged (opt-outs, hard bounces).

Addresses are stored in the same canonical form the planner produces (E.164
for phones, lower case for email), so `+91 98765-43210` added by hand
suppresses `09876543210` in a contact file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine, delete, insert, select, text
from sqlalchemy.orm import Session

from engine.planning import phones
from engine.planning.contacts import (
    EMAIL_COLUMNS,
    MAX_FILE_BYTES,
    PHONE_COLUMNS,
    ContactsError,
    column_key,
    normalize_emails,
    read_contacts,
)
from engine.store import models
from engine.store.db import bulk_insert


def normalize_addresses(values: pa.Array, region: str) -> tuple[pa.Array, np.ndarray]:
    """Canonical addresses for a mix of phones and emails (null where refused) and each refusal's reason."""
    values = pc.utf8_trim_whitespace(pc.fill_null(values.cast(pa.string()), ""))
    is_email = pc.match_substring(values, "@").to_numpy(zero_copy_only=False)
    emails, email_reason = normalize_emails(values)
    numbers = phones.normalize(values, region)
    phone_reason = np.array(phones.REASONS, dtype=object)[numbers.reason]
    addresses = pc.if_else(pa.array(is_email), emails, numbers.e164)
    return addresses, np.where(is_email, email_reason, phone_reason)


def add(
    engine: Engine, values: list[str], *, reason: str, source: str, region: str
) -> tuple[int, list[tuple[str, str]]]:
    """Suppress addresses; returns how many were new and the (value, reason) of those refused."""
    addresses, reasons = normalize_addresses(pa.array(values, pa.string()), region)
    refused = [(v, r) for v, r in zip(values, reasons, strict=True) if r is not None]
    valid = [a for a in addresses.to_pylist() if a is not None]
    return _insert(engine, list(dict.fromkeys(valid)), reason, source), refused


def import_file(
    engine: Engine,
    path: Path,
    *,
    reason: str,
    region: str,
    to_column: str | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> tuple[int, int, list[tuple[int, str, str]]]:
    """Suppress every address in a CSV; returns (rows, newly suppressed, [(line, value, reason) refused])."""
    parsed = read_contacts(path, max_bytes)
    key: str | None
    if to_column:
        key = column_key(to_column)
        if key not in parsed.headers:
            raise ContactsError(f"no column named {to_column!r}; the columns are: {', '.join(parsed.headers.values())}")
    else:
        key = next((k for k in (*PHONE_COLUMNS, *EMAIL_COLUMNS) if k in parsed.headers), None)
        if key is None and len(parsed.headers) == 1:
            key = next(iter(parsed.headers))
    if key is None:
        raise ContactsError(f"{path} has no phone or email column; name it with --to-column")
    raw = parsed.table.column(key).combine_chunks()
    addresses, reasons = normalize_addresses(raw, region)
    refused_rows = np.flatnonzero(~pd.isna(reasons))
    raw_values = raw.to_pylist()
    refused = [(int(parsed.lines[i]), raw_values[i], str(reasons[i])) for i in refused_rows]
    refused += [(line, text, why) for line, text, why in parsed.malformed]
    valid = pc.unique(addresses.drop_null()).to_pylist()
    added = _insert(engine, valid, reason, f"import:{path.name}")
    return parsed.rows, added, refused


def _insert(engine: Engine, addresses: list[str], reason: str, source: str) -> int:
    """Add the distinct `addresses` not yet suppressed, in their order.

    Set-based, so a list of a million hard bounces is one bulk load and one statement.
    """
    models.bounded(reason, models.SUPPRESSIONS.c.reason, "reason")
    source = source[: models.REASON_CHARS]  # a file's name, which may be longer
    if not addresses:
        return 0
    with engine.begin() as connection:
        connection.execute(
            text("CREATE TEMPORARY TABLE incoming_suppressions (position INTEGER, address VARCHAR(320))")
        )
        bulk_insert(connection, "incoming_suppressions", {"position": range(len(addresses)), "address": addresses})
        added = connection.execute(
            text(
                "INSERT INTO suppressions (address, reason, source) "
                "SELECT address, :reason, :source FROM incoming_suppressions WHERE true ORDER BY position "
                "ON CONFLICT (address) DO NOTHING"
            ),
            {"reason": reason, "source": source},
        ).rowcount
        connection.execute(text("DROP TABLE incoming_suppressions"))
    return added


@dataclass(frozen=True)
class Removed:
    """What `remove` did: the addresses taken off the list, those that were not on it, and those refused."""

    removed: list[str]
    not_listed: list[str]
    refused: list[tuple[str, str]]


def remove(engine: Engine, values: list[str], *, reason: str, region: str) -> Removed:
    """Take addresses off the suppression list (the person opted back in); each removal is kept with `reason`
    and what the address had been suppressed for, in one transaction."""
    models.bounded(reason, models.SUPPRESSION_REMOVALS.c.reason, "reason")
    addresses, reasons = normalize_addresses(pa.array(values, pa.string()), region)
    refused = [(v, r) for v, r in zip(values, reasons, strict=True) if r is not None]
    wanted = list(dict.fromkeys(a for a in addresses.to_pylist() if a is not None))
    listed, removals = models.SUPPRESSIONS, models.SUPPRESSION_REMOVALS
    with engine.begin() as connection:
        rows = connection.execute(
            select(listed.c.address, listed.c.reason, listed.c.created_at).where(listed.c.address.in_(wanted))
        ).all()
        if rows:
            connection.execute(delete(listed).where(listed.c.address.in_([row.address for row in rows])))
            connection.execute(
                insert(removals),
                [
                    {"address": r.address, "reason": reason, "previous_reason": r.reason, "suppressed_at": r.created_at}
                    for r in rows
                ],
            )
    removed = {row.address for row in rows}
    return Removed([a for a in wanted if a in removed], [a for a in wanted if a not in removed], refused)


def suppressed_addresses(engine: Engine) -> pa.Array:
    """Every suppressed address, for a set-based filter of a contact list."""
    with engine.connect() as connection:
        return pa.array(connection.execute(select(models.Suppression.address)).scalars().all(), pa.string())


def list_suppressions(engine: Engine, limit: int | None = None) -> list[models.Suppression]:
    with Session(engine) as session:
        query = select(models.Suppression).order_by(models.Suppression.created_at, models.Suppression.id)
        if limit:
            query = query.limit(limit)
        return list(session.scalars(query))
