"""The report a marketer downloads after a campaign: one row per recipient, what went and what became of it.

It is written through `engine.csvsafe`, so a cell cannot run as a formula in a
spreadsheet and the file is the user's alone; times are shown in the display
time zone with their offset, so the file says which zone it is in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine, select

from engine.campaigns.lifecycle import campaign_row
from engine.csvsafe import Target, write_csv
from engine.store import models
from engine.windows import as_utc, zone

M = models.MESSAGES


def export(engine: Engine, campaign_id: int, target: Target, tz: str = "UTC") -> tuple[int, Path]:
    """One row per recipient, safe to open in a spreadsheet, with the text that went (and its subject or
    fallback SMS, where the campaign has them) and its times in `tz` with their offset; returns how many rows
    were written, and where."""
    campaign = campaign_row(engine, campaign_id)
    target.check()
    with engine.connect() as connection:
        result = connection.execute(
            select(
                M.c.line,
                M.c.address,
                M.c.channel_used,
                M.c.status,
                M.c.provider_message_id,
                M.c.error,
                M.c.submitted_at,
                M.c.status_at,
                M.c.body,
                M.c.subject,
                M.c.fallback_body,
            )
            .where(M.c.campaign_id == campaign_id)
            .order_by(M.c.line)
        )
        rows = result.cursor.fetchall()
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [[] for _ in range(11)]
    parts = {"message": columns[8], "subject": columns[9], "fallback_sms": columns[10]}
    path = write_csv(
        target,
        {
            "line": pa.array(columns[0], pa.int64()),
            "address": pa.array(columns[1], pa.string()),
            "channel": pa.array([used or campaign.channel for used in columns[2]], pa.string()),
            "status": pa.array(columns[3], pa.string()),
            "provider_message_id": pa.array(columns[4], pa.string()),
            "error": pa.array(columns[5], pa.string()),
            "submitted_at": pa.array([_text(v, tz) for v in columns[6]], pa.string()),
            "status_at": pa.array([_text(v, tz) for v in columns[7]], pa.string()),
            **{name: pa.array(values, pa.string()) for name, values in parts.items() if any(values)},
        },
    )
    return len(rows), path


def _text(moment: Any, tz: str) -> str | None:
    """A stored time (SQLite gives UTC text, PostgreSQL datetimes) as ISO text in `tz`, with its offset."""
    if moment is None:
        return None
    moment = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return as_utc(moment).astimezone(zone(tz)).isoformat(sep=" ", timespec="seconds")
