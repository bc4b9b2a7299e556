"""Polled delivery reports kept a page at a time (`delivery_pages`), new reports only.

Reports polled before this revision stay in `delivery_events`, where they
were stored one row each.

On PostgreSQL the two binary columns are stored out of line as they are
(`STORAGE EXTERNAL`): `events` is compressed already, and `fingerprints`, random
64-bit integers, does not compress.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "delivery_pages",
        sa.Column("id", Id, nullable=False),
        sa.Column("campaign_id", Id, nullable=False),
        sa.Column("batch_id", Id, nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fingerprints", sa.LargeBinary(), nullable=False),
        sa.Column("events", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_pages")),
    )
    op.create_index(op.f("ix_delivery_pages_batch_id"), "delivery_pages", ["batch_id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE delivery_pages ALTER COLUMN fingerprints SET STORAGE EXTERNAL,"
            " ALTER COLUMN events SET STORAGE EXTERNAL"
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_delivery_pages_batch_id"), table_name="delivery_pages")
    op.drop_table("delivery_pages")
