"""Storage on SQLite and PostgreSQL: migrations, the bulk insert, a saved plan, the suppression list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, select, text

from engine.errors import ConfigurationError
from engine.planning.dlt import DltTemplate
from engine.planning.planner import PlanContext, PlanRequest, build_plan, save_plan
from engine.planning.pricing import PriceTable
from engine.planning.suppressions import add, import_file, list_suppressions, suppressed_addresses
from engine.store import models
from engine.store.db import bulk_insert, current_revision, head_revision, make_engine, open_database, upgrade
from tests.fixtures.campaigns import phones


def test_a_new_sqlite_file_is_migrated_on_first_use(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'new.db'}")
    assert current_revision(engine) == head_revision()
    engine.dispose()
    with pytest.raises(ConfigurationError, match=r"folder of the SQLite database .* does not exist"):
        open_database(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")


def test_postgresql_is_migrated_on_purpose_only(postgres_url: str) -> None:
    expected = f"is at schema none, not {head_revision()}: run `campaign db upgrade`"
    with pytest.raises(ConfigurationError, match=expected):
        open_database(postgres_url)
    engine = make_engine(postgres_url)
    upgrade(engine)
    engine.dispose()
    engine = open_database(postgres_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_migrations_build_exactly_the_models(database: Engine) -> None:
    with database.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), models.metadata) == []


def test_bulk_insert_keeps_nulls_empty_strings_and_awkward_text(database: Engine) -> None:
    texts = ["", 'quote " and, comma', "line\nbreak", "₹ नमस्ते 😀", "\\N", None]
    with database.begin() as connection:
        bulk_insert(
            connection,
            "suppressions",
            {
                "address": phones(len(texts)),
                "reason": ["opt-out"] * len(texts),
                "source": pa.array(texts, pa.string()),
                "created_at": [models.utcnow()] * len(texts),
            },
        )
    with database.connect() as connection:
        rows = connection.execute(select(models.Suppression.source).order_by(models.Suppression.address)).scalars()
        assert list(rows) == texts


def test_bulk_insert_rolls_back_with_its_transaction(database: Engine) -> None:
    with pytest.raises(RuntimeError), database.begin() as connection:
        bulk_insert(
            connection,
            "dlt_templates",
            {
                "template_id": ["1207161234567890123"],
                "entity_id": ["1"],
                "header": ["ACMEIN"],
                "text": ["Hi"],
                "imported_at": [models.utcnow()],
            },
        )
        raise RuntimeError("abort")
    with database.connect() as connection:
        assert connection.execute(select(func.count()).select_from(models.DltTemplate)).scalar_one() == 0


def test_saved_plan_has_one_message_per_recipient_in_its_batch(database: Engine, tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    lines = ["Name,Mobile"] + [f"Person {i},{9_000_000_000 + i}" for i in range(2_500)] + ["Bad,12", "Again,9000000000"]
    path.write_text("\n".join(lines) + "\n")
    add(database, ["+91 90000 00007"], reason="opt-out", source="test", region="IN")
    plan = build_plan(
        PlanRequest(path, "sms", "noxitel", "Hello #name#, ₹ offer", sender="ACMEIN", batch_size=1_000),
        PlanContext(prices=PriceTable.load(), suppressed=suppressed_addresses(database)),
    )
    campaign_id = save_plan(database, plan)
    assert plan.summary.campaign_id == campaign_id
    with database.connect() as connection:
        campaign = connection.execute(select(models.Campaign).where(models.Campaign.id == campaign_id)).one()
        assert (campaign.state, campaign.total_messages, campaign.channel) == ("draft", 2_499, "sms")
        batches = connection.execute(
            select(models.Batch.id, models.Batch.size, models.Batch.state, models.Batch.created_at)
            .where(models.Batch.campaign_id == campaign_id)
            .order_by(models.Batch.seq)
        ).all()
        assert [b.size for b in batches] == [1_000, 1_000, 499]
        assert {b.state for b in batches} == {"planned"} and all(b.created_at for b in batches)
        per_batch = dict(
            connection.execute(select(models.Message.batch_id, func.count()).group_by(models.Message.batch_id)).all()
        )
        assert per_batch == {b.id: b.size for b in batches}
        first = connection.execute(
            select(models.Message).where(models.Message.campaign_id == campaign_id).order_by(models.Message.id).limit(1)
        ).one()
        assert (first.line, first.address, first.body, first.segments, first.encoding, first.status) == (
            2,
            "+919000000000",
            "Hello Person 0, ₹ offer",
            1,
            "ucs2",
            "planned",
        )
        addresses = connection.execute(select(models.Message.address)).scalars().all()
        assert "+919000000007" not in addresses and len(set(addresses)) == len(addresses)


def test_suppression_list_add_import_list(database: Engine, tmp_path: Path) -> None:
    added, refused = add(
        database, ["98765 43210", "Asha@Example.com", "12"], reason="opt-out", source="cli", region="IN"
    )
    assert added == 2 and refused == [("12", "not a valid phone number")]
    assert add(database, ["+919876543210"], reason="opt-out", source="cli", region="IN")[0] == 0
    path = tmp_path / "optouts.csv"
    path.write_text("phone\n09876543210\n9123456789\nnope\n", encoding="utf-16")
    rows, new, bad = import_file(database, path, reason="hard bounce", region="IN")
    assert (rows, new) == (3, 1) and bad == [(4, "nope", "not a valid phone number")]
    listed = list_suppressions(database)
    assert [s.address for s in listed] == ["+919876543210", "asha@example.com", "+919123456789"]
    assert sorted(suppressed_addresses(database).to_pylist()) == sorted(s.address for s in listed)


def test_states_are_constrained(database: Engine) -> None:
    with pytest.raises(Exception, match=r"(?i)check"), database.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO campaigns (name, channel, provider, state, message_template, total_messages,"
                " total_segments, estimated_cost) VALUES ('x', 'sms', 'noxitel', 'sending', 't', 0, 0, 0)"
            )
        )
    assert np.array_equal(
        sorted(s.value for s in models.BatchState),
        sorted(["planned", "sending", "submitted", "settled", "failed", "cancelled", "ambiguous"]),
    )


def test_saved_messages_carry_a_plain_subject_the_registered_header_and_rounded_costs(
    database: Engine, tmp_path: Path
) -> None:
    emails = tmp_path / "em.csv"
    emails.write_text("email,name\nasha@example.com,Asha\nravi@example.com,Ravi\n")
    plan = build_plan(
        PlanRequest(emails, "email", "pixabits", "Hi #name#", sender="a@acme.in", subject="Your Diwali offer"),
        PlanContext(prices=PriceTable.load()),
    )
    email_campaign = save_plan(database, plan)
    phones = tmp_path / "sms.csv"
    phones.write_text("name,mobile\n" + "".join(f"P{i},{9_000_000_000 + i}\n" for i in range(400)))
    template = DltTemplate("1207161234567890126", "1", "ACMEIN", None, "Hello {#var#}")
    plan = build_plan(
        PlanRequest(phones, "sms", "pixabits", "Hello #name#", sender="acmein", dlt_template=template),
        PlanContext(prices=PriceTable.load()),
    )
    sms_campaign = save_plan(database, plan)
    with database.connect() as connection:
        subjects = connection.execute(
            select(models.Message.subject).where(models.Message.campaign_id == email_campaign)
        ).scalars()
        assert list(subjects) == ["Your Diwali offer"] * 2
        sender = connection.execute(select(models.Campaign.sender).where(models.Campaign.id == sms_campaign))
        assert sender.scalar_one() == "ACMEIN"
        cost = connection.execute(select(models.Batch.estimated_cost).where(models.Batch.campaign_id == sms_campaign))
        assert float(cost.scalar_one()) == 60.0  # 400 x 0.15 INR, which sums to 59.99999999999961
