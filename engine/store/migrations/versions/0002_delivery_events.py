"""Delivery events kept once and parked until matched; batch kinds and reported cost; messages by address.

`delivery_events` had never been written to, so it is recreated in its new
shape (a unique fingerprint of the report, no foreign key, no CHECK on the
status: an unknown provider word is kept with a NULL status).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.drop_table("delivery_events")
    op.create_table(
        "delivery_events",
        sa.Column("id", Id, nullable=False),
        sa.Column("fingerprint", sa.BigInteger(), nullable=False),
        sa.Column("message_id", Id, nullable=True),
        sa.Column("campaign_id", Id, nullable=True),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=True),
        sa.Column("provider_message_id", sa.String(length=200), nullable=True),
        sa.Column("provider_batch_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("provider_status", sa.String(length=100), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed", sa.Boolean(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_events")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_delivery_events_fingerprint")),
    )
    with op.batch_alter_table("delivery_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_delivery_events_message_id"),
            ["message_id"],
            unique=False,
            postgresql_where=sa.text("message_id IS NOT NULL"),
            sqlite_where=sa.text("message_id IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_delivery_events_parked",
            ["received_at"],
            unique=False,
            postgresql_where=sa.text("NOT processed"),
            sqlite_where=sa.text("processed = 0"),
        )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), server_default="send", nullable=False))
        batch_op.add_column(
            sa.Column("provider_fallback", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
        batch_op.add_column(sa.Column("reported_cost", sa.Float(), nullable=True))
    # Noxitel RCS batches sent before this revision may have asked the provider for its fallback: the
    # engine must not send a second SMS for them. Batches not sent yet decide when they are.
    op.execute(
        "UPDATE batches SET provider_fallback = true "
        "WHERE channel = 'rcs' AND provider = 'noxitel' AND submitted_at IS NOT NULL"
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_address"), ["address"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_address"))
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("reported_cost")
        batch_op.drop_column("provider_fallback")
        batch_op.drop_column("kind")
    op.drop_table("delivery_events")
    op.create_table(
        "delivery_events",
        sa.Column("id", Id, nullable=False),
        sa.Column("message_id", Id, nullable=True),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=True),
        sa.Column("provider_message_id", sa.String(length=200), nullable=True),
        sa.Column("provider_batch_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_status", sa.String(length=100), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed", sa.Boolean(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_delivery_events_message_id_messages"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_events")),
    )
