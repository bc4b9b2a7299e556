"""Placeholders as a marketer writes them: every header of the file can be one, as written, and text that looks
like a placeholder gone wrong is named with what was probably meant (a warning, a refusal with `--strict`),
while a `#` that is ordinary text (order #123, #hashtags, CSS colours) passes without a word."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from engine.planning.options import PlanOptions
from engine.planning.render import Template
from engine.store import models
from engine.store.db import open_database
from tests.fixtures.cli import run_cli
from tests.fixtures.sandbox import Sandbox

pytestmark = pytest.mark.cli_env(COLUMNS="200")
SMS = ("--provider", "noxitel", "--sender", "ACMEIN", "--skip-balance")


def dues(tmp_path: Path) -> Path:
    """An export whose headers hold parentheses, dots and a slash, as spreadsheets name columns."""
    path = tmp_path / "dues.csv"
    path.write_text(
        "Name,Mobile No.,Amount Due (Rs.),Due Date/Time\n"
        'Asha,+919876500001,"1,200",5 Dec\n'
        "Ravi,+919876500002,950,6 Dec\n",
        encoding="utf-8",
    )
    return path


def bodies(env: dict[str, str]) -> list[str]:
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(models.MESSAGES.c.body).order_by(models.MESSAGES.c.id)).scalars())
    finally:
        engine.dispose()


def test_every_header_is_a_placeholder_as_the_file_writes_it(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    message = "Hi #Name#, #Amount Due (Rs.)# is due by #due date/time#. Pay at acme.in -ACME"
    planned = run_cli(env, "plan", str(dues(tmp_path)), *SMS, "--message", message, "--json")
    assert planned.exit_code == 0, planned.stderr
    assert orjson.loads(planned.stdout)["previews"][0]["text"] == "Hi Asha, 1,200 is due by 5 Dec. Pay at acme.in -ACME"
    assert "looks like a placeholder" not in planned.stderr
    sent = run_cli(env, "send", str(dues(tmp_path)), *SMS, "--message", message, "--yes", "--force")
    assert sent.exit_code == 0, sent.stderr
    expected = [
        "Hi Asha, 1,200 is due by 5 Dec. Pay at acme.in -ACME",
        "Hi Ravi, 950 is due by 6 Dec. Pay at acme.in -ACME",
    ]
    assert bodies(env) == expected
    call = sandbox.last_body("POST /api/v2/sms")  # Noxitel renders each contact's text from the call's one text
    assert [rendered(call["message"], contact.get("parameters", {})) for contact in call["contacts"]] == expected


def rendered(text: str, parameters: dict[str, str]) -> str:
    """A text as Noxitel renders it for one contact: each `#key#` replaced by the contact's value."""
    for key, value in parameters.items():
        text = text.replace(f"#{key}#", value)
    return text


@pytest.mark.parametrize(
    ("message", "warning"),
    [
        ("Hi {name}, pay now", "`{name}` in the message looks like a placeholder: write #Name#"),
        ("Hi {{ name }}, pay now", "`{{ name }}` in the message looks like a placeholder: write #Name#"),
        ("Hi #name, pay now", "`#name` in the message looks like a placeholder: write #Name#"),
        ("Hi # name#, pay now", "`# name#` in the message looks like a placeholder: write #Name#"),
        ("Hi #name #, pay now", "`#name #` in the message looks like a placeholder: write #Name#"),
        ("Hi name#, pay now", "`name#` in the message looks like a placeholder: write #Name#"),
        (
            "Hi #Name#, pay #Amount Due (Rs.) today",
            "`#Amount Due (Rs.)` in the message looks like a placeholder: write #Amount Due (Rs.)#",
        ),
        (
            "Hi #Name#, pay #amount due (rs)# today",
            "`#amount due (rs)#` in the message looks like a placeholder: write #Amount Due (Rs.)#",
        ),
    ],
)
def test_a_broken_placeholder_is_a_warning_and_with_strict_a_refusal(
    message: str, warning: str, env: dict[str, str], tmp_path: Path
) -> None:
    contacts = str(dues(tmp_path))
    planned = run_cli(env, "plan", contacts, *SMS, "--message", message)
    assert planned.exit_code == 0, planned.stderr
    assert f"warning: {warning}\n" in planned.stderr
    for command in (["plan", "--save"], ["send", "--yes"]):
        refused = run_cli(env, *command, contacts, *SMS, "--message", message, "--strict", "--force")
        assert (refused.exit_code, refused.stdout, refused.stderr) == (1, "", f"error: {warning} (--strict)\n")
    assert bodies(env) == []


def test_a_name_that_is_no_column_is_still_refused(env: dict[str, str], tmp_path: Path) -> None:
    planned = run_cli(env, "plan", str(dues(tmp_path)), *SMS, "--message", "Hi #nmae#, pay now")
    assert planned.exit_code == 1
    assert planned.stderr.startswith("error: the message uses #nmae# but the file has no such column")


@pytest.mark.parametrize(
    "message",
    [
        "Your order #123 ships today #DiwaliSale",
        "Sale # 1 ends tonight",
        "Call 1800-###-000",
        "Use code #ACME10 #name2",
    ],
)
def test_hashes_that_name_no_column_are_text(message: str, env: dict[str, str], tmp_path: Path) -> None:
    planned = run_cli(env, "plan", str(dues(tmp_path)), *SMS, "--message", message, "--strict", "--json")
    assert planned.exit_code == 0, planned.stderr
    assert orjson.loads(planned.stdout)["previews"][0]["text"] == message


def test_an_html_body_keeps_its_css_and_markup_and_its_placeholders_work(env: dict[str, str], tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    people.write_text("Email,First Name,Top,Fff\nasha@example.com,Asha,x,y\n", encoding="utf-8")
    body = tmp_path / "body.html"
    body.write_text(
        '<style>p{color:#fff} .top {border:1px solid #1a2b3c}</style><p style="color:#FFF">Hi #First Name#,'
        ' it&#39;s <a href="https://acme.in/offer#top">your offer</a> #Diwali</p>',
        encoding="utf-8",
    )
    email = ["--channel", "email", "--provider", "pixabits", "--sender", "news@acme.in", "--subject", "Hi #first name#"]
    planned = run_cli(env, "plan", str(people), *email, "--html", str(body), "--skip-balance", "--strict", "--json")
    assert planned.exit_code == 0, planned.stderr
    assert "Hi Asha," in orjson.loads(planned.stdout)["previews"][0]["text"]


def test_strict_is_kept_by_a_schedule_and_absent_from_one_stored_before_it(tmp_path: Path) -> None:
    strict = PlanOptions(tmp_path / "c.csv", message="Hi", strict=True)
    assert PlanOptions.from_json(strict.to_json()).strict is True
    plain = PlanOptions(tmp_path / "c.csv", message="Hi")
    assert "strict" not in orjson.loads(plain.to_json())  # stored as before the option existed
    assert PlanOptions.from_json(plain.to_json()) == plain


def test_without_the_file_only_the_usual_shape_is_a_placeholder() -> None:
    """At send time, where the file is not at hand, a text parses as it always has."""
    assert [p.key for p in Template.parse("Hi #name#, #Amount Due (Rs.)# due").placeholders] == ["name"]
    headers = {"name": "Name", "amount_due_rs": "Amount Due (Rs.)"}
    template = Template.parse("Hi #name#, #AMOUNT DUE (RS.)# due", headers)
    assert [p.key for p in template.placeholders] == ["name", "amount_due_rs"]
