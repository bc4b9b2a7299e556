"""Recurring schedules; on each campaign, the zone of its scheduled start, its send window, when it wakes from
waiting for that window, and the schedule that planned it.

The campaign columns are plain additions (no constraint), so SQLite adds them
in place instead of rebuilding the table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", Id, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("tz", sa.String(length=64), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False
        ),
        sa.CheckConstraint("state IN ('active', 'cancelled')", name=op.f("ck_schedules_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scheduled_tz", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("window_start", sa.String(length=5), nullable=True))
        batch_op.add_column(sa.Column("window_end", sa.String(length=5), nullable=True))
        batch_op.add_column(sa.Column("window_tz", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("wake_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("schedule_id", Id, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("schedule_id")
        batch_op.drop_column("wake_at")
        batch_op.drop_column("window_tz")
        batch_op.drop_column("window_end")
        batch_op.drop_column("window_start")
        batch_op.drop_column("scheduled_tz")
    op.drop_table("schedules")
