"""`campaign plan`, `db`, `dlt` and `suppress` as a marketer runs them: real files, one clear line on error."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from engine.cli.app import app
from engine.planning import phones
from engine.settings import get_settings
from engine.store import models
from engine.store.db import head_revision, open_database

MESSAGE = "Hi #name#, your order #order# has shipped and will reach you by #day#. -ACME"
TEMPLATE_ID = "1207161234567890123"
#: The options every plan here shares: the message, its sender and its DLT template.
CAMPAIGN = ("--message", MESSAGE, "--sender", "ACMEIN", "--dlt-template-id", TEMPLATE_ID)
JSON_KEYS = {
    "rows",
    "valid",
    "rejected",
    "rejected_by_reason",
    "duplicates",
    "suppressed",
    "messages",
    "segments",
    "encodings",
    "batches",
    "estimated_cost",
    "rejects_file",
    "campaign_id",
}


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'campaigns.db'}"
    monkeypatch.setenv("CAMPAIGN_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def contacts(tmp_path: Path) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_bytes(
        (
            "\ufeffName;Mobile Number;Order;Day\r\n"
            "Asha;98765 43210;A1;Friday\r\n"
            "Ravi;+91 91234-56789;A2;Monday\r\n"
            "Meera;9.19877E+11;A3;Friday\r\n"
            '=HYPERLINK("x");+91 98765 43210;A4;Friday\r\n'
            ";9000000001;A5;Friday\r\n"
            "Sita;9000000002;A6;Friday\r\n"
        ).encode("utf-8")
    )
    return path


def test_plan_json_counts_and_the_rejects_file(tmp_path: Path, db_url: str) -> None:
    code, out, err = run(
        "plan",
        str(contacts(tmp_path)),
        *CAMPAIGN,
        "--provider",
        "noxitel",
        "--skip-balance",
        "--json",
    )
    assert code == 0, err
    summary = orjson.loads(out)
    assert summary.keys() >= JSON_KEYS
    assert (summary["rows"], summary["valid"], summary["rejected"], summary["duplicates"]) == (6, 3, 2, 1)
    assert summary["rejected_by_reason"] == {
        phones.SCIENTIFIC: 1,
        "empty value for #name#": 1,
    }
    assert summary["batches"] == 1 and summary["campaign_id"] is None
    assert summary["encodings"] == {"gsm7": {"messages": 3}}
    rejects = Path(summary["rejects_file"]).read_text(encoding="utf-8-sig").splitlines()
    assert rejects[1].startswith('"4","9.19877E+11","number was turned into scientific notation')
    assert rejects[2] == '"5","\'+91 98765 43210","duplicate of line 2"'  # formula trigger neutralized
    assert rejects[3] == '"6","9000000001","empty value for #name#"'


def test_plan_summary_is_readable(tmp_path: Path, db_url: str) -> None:
    code, out, err = run(
        "plan",
        str(contacts(tmp_path)),
        "--message",
        MESSAGE,
        "--sender",
        "ACMEIN",
        "--provider",
        "noxitel",
        "--skip-balance",
    )
    assert code == 0
    for expected in ("rows read", "rejected", "duplicates", "suppressed", "segments", "batches", "estimated cost"):
        assert expected in out
    assert "line 2 to +91******3210 (1 SMS part, gsm7): Hi Asha, your order A1 has shipped" in out
    assert "9876543210" not in out  # previews mask numbers
    assert "India-bound SMS have no DLT template" in err


def test_plan_save_stores_the_campaign(tmp_path: Path, db_url: str) -> None:
    code, out, _ = run(
        "plan",
        str(contacts(tmp_path)),
        *CAMPAIGN,
        "--skip-balance",
        "--save",
        "--json",
    )
    assert code == 0
    campaign_id = orjson.loads(out)["campaign_id"]
    engine = open_database(db_url)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(models.Message)).scalar_one() == 3
        saved = connection.execute(
            select(models.Campaign.summary).where(models.Campaign.id == campaign_id)
        ).scalar_one()
        assert orjson.loads(saved)["campaign_id"] == campaign_id
    engine.dispose()


def test_balance_is_read_from_the_provider_and_guards_the_plan(tmp_path: Path, db_url: str) -> None:
    path = contacts(tmp_path)
    code, out, err = run("plan", str(path), "--message", MESSAGE, "--sender", "ACMEIN", "--json")
    assert code == 0, err
    assert orjson.loads(out)["balance"]["currency"] == "INR"
    code, _, err = run("plan", str(path), "--message", MESSAGE, "--sender", "ACMEIN", "--max-cost", "0.2")
    assert code == 1
    assert "estimated cost 0.45 INR is over --max-cost 0.20 INR" in " ".join(err.split())


def _contacts_without_numbers(tmp_path: Path) -> Path:
    path = tmp_path / "c.csv"
    path.write_text("name,city\nAsha,Pune\n")
    return path


def _no_valid(tmp_path: Path) -> Path:
    path = tmp_path / "c.csv"
    path.write_text("name,mobile,order,day\nAsha,123,A1,Mon\n")
    return path


def _binary(tmp_path: Path) -> Path:
    path = tmp_path / "c.csv"
    path.write_bytes(b"\x00\x01\x02\x03" * 100)
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "c.csv"
    path.write_bytes(b"")
    return path


def _truncated_utf16(tmp_path: Path) -> Path:
    path = tmp_path / "c.csv"
    path.write_bytes("name,mobile,order,day\nAsha,9876543210,A1,Mon\n".encode("utf-16")[:-1])
    return path


def _late_zero_byte(tmp_path: Path) -> Path:
    path = tmp_path / "c.csv"
    rows = "".join(f"Asha,{9_000_000_000 + i},A{i},Mon\n" for i in range(3_000))
    path.write_text("name,mobile,order,day\n" + rows + "Ravi,9000\x00000001,A,Mon\n")
    return path


def _missing_column_in_template(tmp_path: Path) -> Path:
    path = tmp_path / "c.csv"
    path.write_text("name,mobile\nAsha,9876543210\n")
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp / "absent.csv", "no such file"),
        (_empty, "is empty"),
        (_contacts_without_numbers, "no phone number column found"),
        (_missing_column_in_template, "the message uses #order#, #day# but the file has no such column"),
        (_binary, "not a CSV"),
        (_truncated_utf16, "looks like UTF-16"),
        (_late_zero_byte, "not a CSV file (it holds binary data: a NUL byte on line 3,002)"),
        (_no_valid, "no valid rows: all 1 rows"),
    ],
)
def test_bad_files_give_one_error_line_and_exit_1(tmp_path: Path, db_url: str, make, expected: str) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run("plan", str(make(tmp_path)), "--message", MESSAGE, "--sender", "ACMEIN", "--skip-balance")
    assert code == 1
    assert out == ""
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_bad_file_through_the_installed_command(tmp_path: Path, db_url: str) -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "campaign"),
            "plan",
            str(tmp_path / "none.csv"),
            "--message",
            "x",
            "--sender",
            "ACMEIN",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"CAMPAIGN_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error:") and "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_dlt_template_and_wrong_sender_are_refused(tmp_path: Path, db_url: str) -> None:
    path = contacts(tmp_path)
    code, _, err = run(
        "plan",
        str(path),
        "--message",
        MESSAGE,
        "--sender",
        "ACMEIN",
        "--dlt-template-id",
        "1207160000000000000",
        "--skip-balance",
    )
    assert code == 1 and "not in the registry" in err
    code, _, err = run(
        "plan",
        str(path),
        "--message",
        MESSAGE,
        "--sender",
        "OTHERS",
        "--dlt-template-id",
        TEMPLATE_ID,
        "--skip-balance",
    )
    assert code == 1 and "sender OTHERS is not the header ACMEIN" in " ".join(err.split())


def test_require_dlt_setting_makes_the_warning_an_error(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAMPAIGN_REQUIRE_DLT", "true")
    get_settings.cache_clear()
    code, _, err = run("plan", str(contacts(tmp_path)), "--message", MESSAGE, "--sender", "ACMEIN", "--skip-balance")
    assert code == 1 and "CAMPAIGN_REQUIRE_DLT" in " ".join(err.split())


def test_starter_plan_quota_spreads_or_refuses(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXABITS_PLAN", "Starter")
    get_settings.cache_clear()
    path = tmp_path / "big.csv"
    path.write_text("name,mobile\n" + "".join(f"A,{9_000_000_000 + i}\n" for i in range(1_500)))
    code, out, _ = run("plan", str(path), "--message", "Hi #name#", "--sender", "ACMEIN", "--skip-balance", "--json")
    assert code == 0
    assert [d["messages"] for d in orjson.loads(out)["days"]] == [1_000, 500]
    code, _, err = run(
        "plan", str(path), "--message", "Hi #name#", "--sender", "ACMEIN", "--skip-balance", "--no-spread"
    )
    assert code == 1 and "exceed the daily quota of 1,000" in " ".join(err.split())


def test_suppress_commands(tmp_path: Path, db_url: str) -> None:
    code, out, _ = run("suppress", "add", "+91 98765 43210", "asha@example.com", "--reason", "complaint")
    assert code == 0 and "suppressed 2 new addresses" in out
    code, _, err = run("suppress", "add", "12345")
    assert code == 1 and "'12345': not a valid phone number" in err
    optouts = tmp_path / "optouts.csv"
    optouts.write_text("Mobile;Note\n9123456789;stop\nbad;x\n")
    code, out, err = run("suppress", "import", str(optouts))
    assert code == 0 and "read 2 rows: 1 newly suppressed, 1 unusable" in out and "line 3" in err
    code, out, _ = run("suppress", "list", "--json")
    assert [row["address"] for row in orjson.loads(out)] == ["+919876543210", "asha@example.com", "+919123456789"]
    code, out, _ = run(
        "plan", str(contacts(tmp_path)), "--message", MESSAGE, "--sender", "ACMEIN", "--skip-balance", "--json"
    )
    assert orjson.loads(out)["suppressed"] == 2  # Asha and Ravi; Asha's second row is a duplicate


def test_dlt_commands(tmp_path: Path, db_url: str) -> None:
    registry = tmp_path / "dlt.csv"
    registry.write_text(
        "template_id,entity_id,header,category,text\n1207169999999999999,1201,ACMEIN,Promo,Hello {#var#}\n"
    )
    code, out, _ = run("dlt", "import", str(registry))
    assert code == 0 and "imported 1 DLT templates" in out
    code, out, _ = run("dlt", "list", "--json")
    listed = orjson.loads(out)
    assert listed[0] == {
        "template_id": "1207169999999999999",
        "entity_id": "1201",
        "header": "ACMEIN",
        "category": "Promo",
        "text": "Hello {#var#}",
        "source": "imported",
    }
    assert {t["source"] for t in listed[1:]} == {"shipped"} and TEMPLATE_ID in {t["template_id"] for t in listed}
    bad = tmp_path / "bad.csv"
    bad.write_text("template_id,entity_id,header,text\n12,1,ACMEIN,Hi\n")
    code, _, err = run("dlt", "import", str(bad))
    assert code == 1 and "line 2" in err


def test_db_upgrade_on_postgresql(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMPAIGN_DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    try:
        code, out, _ = run("db", "current")
        assert code == 0 and "schema none" in out
        code, out, _ = run("db", "upgrade")
        assert code == 0 and f"database at schema {head_revision()}" in out
    finally:
        get_settings.cache_clear()


def test_db_upgrade_reports_an_unreachable_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMPAIGN_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
    get_settings.cache_clear()
    try:
        code, _, err = run("db", "upgrade")
        assert code == 1 and err.startswith("error: cannot upgrade the database")
    finally:
        get_settings.cache_clear()


def test_email_plan_takes_its_body_from_an_html_file(tmp_path: Path, db_url: str) -> None:
    people = tmp_path / "people.csv"
    people.write_text("Email,First Name\nasha@example.com,Asha\nRAVI@example.com,Ravi\nnot-an-address,X\n")
    body = tmp_path / "body.html"
    body.write_text("<p>Namaste #first name#, =your invoice is ready.</p>", encoding="utf-8")
    code, out, err = run(
        "plan",
        str(people),
        "--channel",
        "email",
        "--provider",
        "pixabits",
        "--html",
        str(body),
        "--subject",
        "Invoice for #First Name#",
        "--sender",
        "billing@acme.in",
        "--skip-balance",
        "--json",
        "--save",
    )
    assert code == 0, err
    summary = orjson.loads(out)
    assert (summary["valid"], summary["rejected_by_reason"]) == (2, {"not a valid email address": 1})
    assert summary["previews"][1]["text"] == "<p>Namaste Ravi, =your invoice is ready.</p>"
    engine = open_database(db_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(models.Message.address, models.Message.subject).order_by(models.Message.id)
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("asha@example.com", "Invoice for Asha"),
        ("ravi@example.com", "Invoice for Ravi"),
    ]


def test_an_unwritable_rejects_file_is_one_error_line(tmp_path: Path, db_url: str) -> None:
    code, _, err = run(
        "plan",
        str(contacts(tmp_path)),
        "--message",
        MESSAGE,
        "--sender",
        "ACMEIN",
        "--skip-balance",
        "--rejects",
        str(tmp_path / "no" / "such" / "dir.csv"),
    )
    assert code == 1 and err.startswith("error: cannot write") and "Traceback" not in err


def test_a_large_file_plans_with_a_progress_bar(tmp_path: Path, db_url: str) -> None:
    path = tmp_path / "large.csv"
    row = "Asha Rao from the Pune office,{},A-{},Friday\n"
    path.write_text("name,mobile,order,day\n" + "".join(row.format(9_000_000_000 + i, i) for i in range(110_000)))
    assert path.stat().st_size > 4 * 1024 * 1024
    command = [str(Path(sys.executable).parent / "campaign"), "plan", str(path), "--message", "Hi #name#"]
    # A terminal, as the marketer has (rich reads these): the bar is drawn on stderr, and only there.
    terminal = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "100"}
    result = subprocess.run(
        [*command, "--sender", "ACMEIN", "--skip-balance"],
        capture_output=True,
        text=True,
        check=False,
        env={"CAMPAIGN_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", **terminal},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "110,000" in result.stdout and "━" not in result.stdout
    assert "reading" in result.stderr and "━" in result.stderr


def test_dlt_variable_length_out_of_range_is_one_error_line(tmp_path: Path, db_url: str) -> None:
    for value in ("0", "1001"):
        code, out, err = run(
            "plan", str(contacts(tmp_path)), "--message", MESSAGE, "--sender", "ACMEIN", "--skip-balance",
            "--dlt-var-max", value,
        )  # fmt: skip
        assert (code, out) == (1, "")
        assert err == "error: --dlt-var-max must be between 1 and 1000 characters\n"


def test_an_email_with_a_plain_subject_stores_it_on_every_message(tmp_path: Path, db_url: str) -> None:
    people = tmp_path / "em.csv"
    people.write_text("email,name\nasha@example.com,Asha\nravi@example.com,Ravi\n")
    code, _, err = run(
        "plan", str(people), "--channel", "email", "--subject", "Your Diwali offer", "--message", "Hi #name#",
        "--sender", "a@acme.in", "--skip-balance", "--save",
    )  # fmt: skip
    assert code == 0, err
    engine = open_database(db_url)
    with engine.connect() as connection:
        subjects = connection.execute(select(models.Message.subject)).scalars().all()
    engine.dispose()
    assert subjects == ["Your Diwali offer"] * 2


def test_message_and_html_together_are_refused(tmp_path: Path, db_url: str) -> None:
    body = tmp_path / "b.html"
    body.write_text("<p>x</p>")
    code, _, err = run("plan", str(contacts(tmp_path)), "--channel", "email", "--message", "x", "--html", str(body))
    assert code == 1 and "not both" in err


def test_people_who_opt_back_in_are_taken_off_the_list_with_the_reason_kept(db_url: str) -> None:
    assert run("suppress", "add", "+919876543210", "9123456789", "--reason", "STOP reply")[0] == 0
    code, out, err = run("suppress", "remove", "98765 43210", "+14155550100", "--reason", "asked again by email")
    assert code == 0 and "removed 1 addresses from the suppression list" in out
    assert "+14155550100 was not suppressed" in err
    listed = orjson.loads(run("suppress", "list", "--json")[1])
    assert [row["address"] for row in listed] == ["+919123456789"]
    engine = open_database(db_url)
    with engine.connect() as connection:
        kept = connection.execute(
            select(
                models.SUPPRESSION_REMOVALS.c.address,
                models.SUPPRESSION_REMOVALS.c.reason,
                models.SUPPRESSION_REMOVALS.c.previous_reason,
            )
        ).all()
    engine.dispose()
    assert [tuple(row) for row in kept] == [("+919876543210", "asked again by email", "STOP reply")]
    code, _, err = run("suppress", "remove", "+919123456789")
    assert code == 2  # the reason is required: a consent decision says why


def test_the_preview_shows_as_many_recipients_as_asked_with_every_part(db_url: str, tmp_path: Path) -> None:
    """The subject of an email and the fallback SMS of an RCS message go out too: the preview shows them,
    in the terminal and in --json, for --preview N recipients."""
    people = tmp_path / "people.csv"
    people.write_text("name,email,mobile\nAsha,asha@example.com,+919876543210\nRavi,ravi@example.com,+919123456789\n")
    email = (
        "--channel",
        "email",
        "--provider",
        "pixabits",
        "--sender",
        "news@acme.in",
        "--rejects",
        str(tmp_path / "e.csv"),
    )
    code, out, _ = run(
        "plan",
        str(people),
        *email,
        "--subject",
        "Hi #name#",
        "--message",
        "<p>Sale, #name#</p>",
        "--preview",
        "1",
        "--json",
    )
    assert code == 0
    assert orjson.loads(out)["previews"] == [
        {
            "line": 2,
            "to": "a***@example.com",
            "text": "<p>Sale, Asha</p>",
            "subject": "Hi Asha",
            "fallback": None,
            "segments": None,
            "encoding": None,
        }
    ]
    rcs = (
        "--channel",
        "rcs",
        "--provider",
        "noxitel",
        "--agent-id",
        "101",
        "--sender",
        "ACMEIN",
        "--to-column",
        "mobile",
    )
    code, out, _ = run(
        "plan",
        str(people),
        *rcs,
        "--message",
        "Sale, #name#!",
        "--fallback-message",
        "Sale, #name#! -ACME",
        "--rejects",
        str(tmp_path / "r.csv"),
        "--preview",
        "2",
    )
    assert code == 0
    assert out.count("fallback SMS: Sale, ") == 2 and "fallback SMS: Sale, Ravi! -ACME" in out
