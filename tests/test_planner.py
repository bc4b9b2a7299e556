"""Planning: batches within every limit, the daily quota, the cost and the money checks, DLT on the way."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from engine.planning.contacts import read_contacts
from engine.planning.dlt import DltError, DltTemplate
from engine.planning.planner import PlanContext, PlanRefused, PlanRequest, build_plan, cut_batches
from engine.planning.pricing import PriceTable
from engine.providers.base import Balance, Channel
from engine.providers.pixabits import PixabitsClient
from engine.windows import next_day

PRICES = PriceTable.load()
DLT = DltTemplate(
    "1207161234567890123",
    "1201159876543210987",
    "ACMEIN",
    None,
    "Hi {#var#}, your order {#var#} has shipped. -ACME",
)
MESSAGE = "Hi #name#, your order #order# has shipped. -ACME"


def contacts_file(path: Path, count: int, start: int = 9_000_000_000, prefix: str = "") -> Path:
    """`count` distinct valid Indian mobiles with a name and an order column."""
    numbers = np.char.add(prefix, (start + np.arange(count)).astype(str))
    pa_csv.write_csv(
        pa.table(
            {"name": np.full(count, "Asha"), "mobile": numbers, "order": np.char.add("A", np.arange(count).astype(str))}
        ),
        str(path),
    )
    return path


def request(path: Path, **options: object) -> PlanRequest:
    defaults: dict[str, object] = {
        "channel": "sms",
        "provider": "noxitel",
        "message": MESSAGE,
        "sender": "ACMEIN",
        "dlt_template": DLT,
    }
    defaults.update(options)
    return PlanRequest(contacts=path, **defaults)  # type: ignore[arg-type]


def context(**options: object) -> PlanContext:
    return PlanContext(prices=PRICES, **options)  # type: ignore[arg-type]


def batch_sizes(plan) -> list[int]:  # type: ignore[no-untyped-def]
    return np.bincount(plan.batch_of).tolist()


def test_sms_batches_never_exceed_the_provider_limit(tmp_path: Path) -> None:
    plan = build_plan(request(contacts_file(tmp_path / "c.csv", 120_001)), context())
    assert batch_sizes(plan) == [50_000, 50_000, 20_001]
    assert plan.summary.batches == 3 and plan.summary.largest_batch == 50_000
    assert np.all(np.diff(plan.batch_of) >= 0)  # each batch is one run of the file's order


def test_email_batches_stop_at_ten_thousand(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    emails = [f"user{i}@example.com" for i in range(25_000)]
    pa_csv.write_csv(pa.table({"Email": emails, "name": ["Asha"] * 25_000}), str(path))
    plan = build_plan(
        request(
            path,
            channel="email",
            provider="pixabits",
            subject="Hello #name#",
            message="<p>Hi #name#</p>",
            dlt_template=None,
            sender="news@acme.in",
        ),
        context(),
    )
    assert batch_sizes(plan) == [10_000, 10_000, 5_000]
    assert plan.subjects is not None and plan.subjects.to_pylist()[:1] == ["Hello Asha"]
    assert plan.summary.estimated_cost == pytest.approx(25_000 * 0.02)


def test_one_recipient_endpoints_still_get_batches_and_noxitel_has_no_email(tmp_path: Path) -> None:
    """Pixabits RCS takes one recipient per call, but a batch (one task) holds many such calls."""
    path = contacts_file(tmp_path / "c.csv", 2_500)
    plan = build_plan(request(path, channel="rcs", provider="pixabits", dlt_template=None), context())
    assert batch_sizes(plan) == [1_000, 1_000, 500] and PixabitsClient.max_batch(Channel.RCS) == 1
    with pytest.raises(PlanRefused, match="noxitel does not offer email"):
        build_plan(request(path, channel="email", subject="x"), context())


def test_a_noxitel_rcs_agent_id_must_be_a_number(tmp_path: Path) -> None:
    """Refused at planning, not found out by a worker after the campaign is saved."""
    path = contacts_file(tmp_path / "c.csv", 5)
    with pytest.raises(PlanRefused, match="agent ids are numbers; 'acme_bot' is not one"):
        build_plan(request(path, channel="rcs", agent_id="acme_bot", dlt_template=None), context())


def test_batch_size_option_lowers_but_never_raises_the_limit(tmp_path: Path) -> None:
    path = contacts_file(tmp_path / "c.csv", 1_000)
    assert batch_sizes(build_plan(request(path, batch_size=300), context())) == [300, 300, 300, 100]
    assert batch_sizes(build_plan(request(path, batch_size=10**9), context())) == [1_000]


def test_batches_are_cut_by_request_size_and_by_day() -> None:
    payload = np.array([400, 400, 400, 100, 100, 900, 50])
    days = np.array([0, 0, 0, 0, 1, 1, 1])
    batch_of = cut_batches(payload, days, limit=3, max_bytes=1_000)
    assert batch_of.tolist() == [0, 0, 1, 1, 2, 2, 3]
    for batch in np.unique(batch_of):
        members = batch_of == batch
        assert members.sum() <= 3 and payload[members].sum() <= 1_000 and len(set(days[members])) == 1
    assert cut_batches(np.array([5_000]), np.array([0]), limit=10, max_bytes=1_000).tolist() == [0]


def test_daily_quota_spreads_over_days_or_refuses(tmp_path: Path) -> None:
    path = contacts_file(tmp_path / "c.csv", 2_500)
    plan = build_plan(request(path, provider="pixabits"), context(daily_quota=1_000, plan_name="starter"))
    days = plan.summary.as_json()["days"]
    starts = [datetime.fromisoformat(day.pop("starts_at")) for day in days]
    assert days == [
        {"day": 1, "messages": 1_000, "batches": 1},
        {"day": 2, "messages": 1_000, "batches": 1},
        {"day": 3, "messages": 500, "batches": 1},
    ]
    assert starts[1:] == [next_day(starts[0]), next_day(starts[0]) + timedelta(days=1)]  # as the quota rolls over
    assert plan.batch_days.tolist() == [0, 1, 2]
    with pytest.raises(
        PlanRefused, match=r"2,500 messages exceed the daily quota of 1,000 of the pixabits starter plan.*3 days"
    ):
        build_plan(request(path, provider="pixabits", spread=False), context(daily_quota=1_000, plan_name="starter"))


def test_cost_counts_segments_by_encoding(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("name,mobile,order\nAsha,9876543210,A1\nअनु,9876543211,A2\n" + "Ravi,9876543212," + "B" * 200 + "\n")
    plan = build_plan(request(path, dlt_var_max=300), context())
    assert plan.encoded.segments.tolist() == [1, 1, 2]
    assert plan.summary.segments == 4
    assert plan.summary.as_json()["encodings"]["ucs2"] == {"messages": 1, "because_of": {"अ": 1}}
    assert plan.summary.estimated_cost == pytest.approx(4 * 0.0018)
    assert plan.summary.currency == "USD"
    assert plan.summary.prices == ["0.0018 USD per segment (gsm7)", "0.0018 USD per segment (ucs2)"]


def test_over_the_cap_or_the_balance_is_refused_with_both_figures(tmp_path: Path) -> None:
    path = contacts_file(tmp_path / "c.csv", 1_000)
    with pytest.raises(PlanRefused, match=r"estimated cost 150.00 INR is over --max-cost 100.00 INR"):
        build_plan(request(path, provider="pixabits", max_cost=100), context())
    poor = Balance("pixabits", amount=99.5, currency="INR")
    with pytest.raises(PlanRefused, match=r"estimated cost 150.00 INR is more than the pixabits balance 99.50 INR"):
        build_plan(request(path, provider="pixabits"), context(balance=poor))
    credits = Balance("noxitel", amount=120.0, currency="EUR", credits=999)
    with pytest.raises(PlanRefused, match="needs 1,000 credits and the noxitel account has 999"):
        build_plan(request(path), context(balance=credits))
    rich = build_plan(request(path, provider="pixabits"), context(balance=Balance("pixabits", 1e6, "INR")))
    assert rich.summary.as_json()["balance"] == {"amount": 1e6, "currency": "INR", "credits": None}


def test_dlt_rows_that_do_not_match_are_rejected_and_foreign_numbers_are_not_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "name,mobile,order\n"
        "Asha,9876543210,A1\n"
        "Bhagyalakshmi Venkataraman Iyer Rao,9876543211,A2\n"
        "John Smith Who Has A Very Long Name Too,+1 212 555 0100,A3\n"
    )
    plan = build_plan(request(path), context())
    assert plan.summary.valid == 2
    assert plan.summary.rejected_by_reason == {
        "a variable part is longer than 30 characters (DLT template 1207161234567890123)": 1
    }


def test_india_bound_sms_without_dlt_warns_or_is_an_error_when_required(tmp_path: Path) -> None:
    path = contacts_file(tmp_path / "c.csv", 3)
    plan = build_plan(request(path, dlt_template=None), context())
    assert plan.summary.warnings == [
        "3 India-bound SMS have no DLT template: operators will block them (give --dlt-template-id)"
    ]
    with pytest.raises(PlanRefused, match=r"operators will block them.*CAMPAIGN_REQUIRE_DLT"):
        build_plan(request(path, dlt_template=None), context(require_dlt=True))


def test_static_wording_and_sender_are_checked_against_the_template(tmp_path: Path) -> None:
    path = contacts_file(tmp_path / "c.csv", 3)
    with pytest.raises(DltError, match=r"does not match DLT template .* at all"):
        build_plan(request(path, message="Flash sale #name#!"), context())
    with pytest.raises(DltError, match="sender OTHER is not the header ACMEIN"):
        build_plan(request(path, sender="OTHER"), context())


def test_rcs_fallback_sms_is_rendered_checked_and_costed(tmp_path: Path) -> None:
    path = contacts_file(tmp_path / "c.csv", 4)
    plan = build_plan(
        request(
            path, channel="rcs", message="Your order #order# is on its way", fallback_message=MESSAGE, agent_id="7"
        ),
        context(),
    )
    assert plan.fallbacks is not None and plan.fallbacks.to_pylist()[0] == "Hi Asha, your order A0 has shipped. -ACME"
    assert plan.summary.fallback.segments == 4
    assert plan.summary.estimated_cost == pytest.approx(4 * 0.003)


def test_every_row_is_accounted_for_once(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "name,mobile,order\nAsha,9876543210,A1\nRavi,09876543210,A2\n,9123456789,A3\nMeera,12,A4\n"
        "Sita,9000000001,A5\nbroken,row\n"
    )
    plan = build_plan(request(path), context(suppressed=pa.array(["+919000000001"])))
    summary = plan.summary
    assert (summary.rows, summary.valid, summary.rejected, summary.duplicates, summary.suppressed) == (
        6,
        1,
        3,
        1,
        1,
    )
    assert summary.rows == summary.valid + summary.rejected + summary.duplicates + summary.suppressed
    assert summary.rejected_by_reason == {
        "empty value for #name#": 1,
        "not a valid phone number": 1,
        "row has 2 fields but the header has 3 (check the delimiter and quotes)": 1,
    }
    rejects = Path(summary.rejects_file).read_text(encoding="utf-8-sig").splitlines()
    assert [line.split(",")[0] for line in rejects] == ['"line"', '"3"', '"4"', '"5"', '"6"', '"7"']
    assert summary.as_json()["previews"] == [
        {
            "line": 2,
            "to": "+91******3210",
            "text": "Hi Asha, your order A1 has shipped. -ACME",
            "subject": None,
            "fallback": None,
            "segments": 1,
            "encoding": "gsm7",
        }
    ]


def test_no_valid_rows_is_refused_and_the_rejects_file_explains(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("name,mobile,order\nAsha,12,A1\nRavi,,A2\n")
    with pytest.raises(PlanRefused, match=r"no valid rows: all 2 rows .* were refused; see .*c\.rejects\.csv"):
        build_plan(request(path), context())
    assert len(read_contacts(tmp_path / "c.rejects.csv").table) == 2


def test_the_first_copy_that_can_be_sent_wins_over_an_earlier_refused_one(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("name,phone\n,9876543210\nAsha,+91 98765 43210\nRavi,098765 43210\n")
    plan = build_plan(request(path, message="Hi #name#", dlt_template=None), context())
    assert plan.bodies.to_pylist() == ["Hi Asha"]
    assert plan.contacts.file.lines[plan.rows].tolist() == [3]
    assert (plan.summary.rejected_by_reason, plan.summary.duplicates) == ({"empty value for #name#": 1}, 1)
    rejects = Path(plan.summary.rejects_file).read_text(encoding="utf-8-sig").splitlines()
    assert rejects[1:] == [
        '"2","9876543210","empty value for #name#"',
        '"4","098765 43210","duplicate of line 3"',
    ]


def test_a_dlt_refused_copy_does_not_shut_out_a_later_matching_one(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("name,mobile,order\nBhagyalakshmi Venkataraman Iyer Rao,9876543210,A1\nAsha,9876543210,A2\n")
    plan = build_plan(request(path), context())
    assert plan.bodies.to_pylist() == ["Hi Asha, your order A2 has shipped. -ACME"]
    assert plan.summary.duplicates == 0


def test_smart_encoding_applies_to_the_static_dlt_check(tmp_path: Path) -> None:
    path = contacts_file(tmp_path / "c.csv", 2)
    straight = DltTemplate("1207161234567890125", "1", "ACMEIN", None, "Hi {#var#}, your order {#var#} isn't late.")
    curly = "Hi #name#, your order #order# isn\u2019t late."
    with pytest.raises(DltError, match="at all"):
        build_plan(request(path, message=curly, dlt_template=straight), context())
    plan = build_plan(request(path, message=curly, dlt_template=straight, smart_encoding=True), context())
    assert plan.bodies.to_pylist() == ["Hi Asha, your order A0 isn't late.", "Hi Asha, your order A1 isn't late."]


@pytest.mark.parametrize("var_max", [0, -5, 1001])
def test_dlt_variable_length_is_bounded(tmp_path: Path, var_max: int) -> None:
    path = contacts_file(tmp_path / "c.csv", 2)
    with pytest.raises(PlanRefused, match="--dlt-var-max must be between 1 and 1000"):
        build_plan(request(path, dlt_var_max=var_max), context())
    assert build_plan(request(path, dlt_var_max=1000), context()).summary.valid == 2


def test_the_sender_is_the_registered_header_as_registered(tmp_path: Path) -> None:
    path = contacts_file(tmp_path / "c.csv", 2)
    assert build_plan(request(path, sender=" acmein"), context()).summary.sender == "ACMEIN"
    assert build_plan(request(path, sender="acmein", dlt_template=None), context()).summary.sender == "acmein"


def test_a_plain_subject_is_carried_by_every_message(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("email,name\nasha@example.com,Asha\nravi@example.com,Ravi\n")
    plan = build_plan(
        request(
            path,
            channel="email",
            provider="pixabits",
            subject="Your Diwali offer",
            message="Hi #name#",
            sender="news@acme.in",
        ),
        context(),
    )
    assert plan.subjects is not None and plan.subjects.to_pylist() == ["Your Diwali offer"] * 2


def test_a_stray_bad_byte_in_a_utf8_file_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    rows = "".join(f"Zoë Ångström,{9_000_000_000 + i},A{i}\n" for i in range(5))
    path.write_bytes(("name,mobile,order\n" + rows).encode("utf-8") + b"Bad\xc3,9123456789,A9\n")
    plan = build_plan(request(path, dlt_template=None), context())
    assert plan.bodies.to_pylist()[0] == "Hi Zoë Ångström, your order A0 has shipped. -ACME"
    assert [w for w in plan.summary.warnings if "invalid byte" in w] == [
        f"{path} is UTF-8 apart from 1 invalid byte sequence, shown as \ufffd in the messages and the rejects file: "
        "check those rows"
    ]


def test_noxitel_whatsapp_text_cannot_be_personalised(tmp_path: Path) -> None:
    path = contacts_file(tmp_path / "c.csv", 3)
    with pytest.raises(PlanRefused, match="one WhatsApp text to every contact"):
        build_plan(request(path, channel="whatsapp", dlt_template=None), context())
    plan = build_plan(request(path, channel="whatsapp", dlt_template=None, message="Our sale is on"), context())
    assert plan.summary.messages == 3


def test_the_dlt_warning_counts_only_the_messages_that_would_go(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "name,mobile,order\nAsha,9876543210,A1\nRavi,+91 98765 43210,A2\nSita,12345,A3\nAnu,9123456789,A4\n"
    )
    plan = build_plan(request(path, dlt_template=None), context())
    assert plan.summary.messages == 2  # one duplicate, one invalid number
    assert plan.summary.warnings[0].startswith("2 India-bound SMS have no DLT template")
