"""What a file, an option or the database holds is shown on the terminal as text, never obeyed.

Rich markup (`[/x]`), escape sequences, carriage returns and bidirectional
overrides come from contact files, campaign names, suppression reasons and
message texts. Each command either does its work or says in one line why not;
none crashes after it acted, and nothing it prints drives the terminal.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import Result

from engine.store.db import open_database
from tests.fixtures.cli import SEND, run_cli

#: Pieces that a terminal or rich would act on, and ordinary ones around them.
FRAGMENTS = [
    "[/x]",
    "[/]",
    "[bold red]",
    "[link=https://example.com]",
    ":smile:",
    "\x1b[31m",
    "\x1b]0;owned\x07",
    "\x1b[2J",
    "\r",
    "\x08",
    "\x7f",
    "\x9b",
    "\u202e",
    "\u2066",
    "moc.knab",
    "%s",
    "{0}",
    "\\",
    "'",
    '"',
    ",",
    ";",
    "=1+1",
    "é",
    "🎉",
    "Asha",
    "x" * 300,
]
hostile = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(st.characters(exclude_characters="\x00"), max_size=6)),
    min_size=1,
    max_size=5,
).map("".join)

#: What must never reach a terminal raw: C0 controls but newline, DEL, C1, and the bidirectional controls.
ACTIVE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
US_SMS = ["--channel", "sms", "--provider", "noxitel", "--sender", "ACME"]


def assert_shown_safely(result: Result) -> None:
    """The command either worked or said why in one `error:` line; no traceback, nothing a terminal acts on."""
    for text in (result.stdout, result.stderr):
        assert "Traceback" not in text
        assert not ACTIVE.search(text.replace("\t", " ")), text
    if result.exit_code != 0:
        errors = result.stderr.strip().splitlines()
        assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def write_contacts(path: Path, name: str, header: str = "name") -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["phone", header])
        writer.writerow(["+14155550100", name])
        writer.writerow(["+14155550101", "Ravi"])
    return path


def campaign_count(env: dict[str, str]) -> int:
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            return int(connection.exec_driver_sql("SELECT count(*) FROM campaigns").scalar_one())
    finally:
        engine.dispose()


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=hostile)
def test_hostile_strings_in_files_names_and_texts_are_shown_not_obeyed(
    env: dict[str, str], tmp_path: Path, text: str
) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", text)
    before = campaign_count(env)
    planned = run_cli(
        env, "plan", str(contacts), *US_SMS, "--message", f"Hi #name#, {text}", "--name", text, "--save", "--force"
    )
    assert_shown_safely(planned)
    if planned.exit_code != 0:
        assert campaign_count(env) == before  # refused: nothing stored
        return
    assert campaign_count(env) == before + 1
    listed = run_cli(env, "list")
    assert_shown_safely(listed)
    assert listed.exit_code == 0
    status = run_cli(env, "status", str(before + 1))
    assert_shown_safely(status)
    assert status.exit_code == 0


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=hostile)
def test_hostile_headers_and_suppression_reasons_are_shown_not_obeyed(
    env: dict[str, str], tmp_path: Path, text: str
) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", "Asha", header=text)
    assert_shown_safely(run_cli(env, "plan", str(contacts), *US_SMS, "--message", "Hello", "--force"))
    added = run_cli(env, "suppress", "add", "+14155550199", "--reason", text)
    assert_shown_safely(added)
    listed = run_cli(env, "suppress", "list")
    assert_shown_safely(listed)
    assert listed.exit_code == 0


def test_a_campaign_named_like_markup_is_sent_once_and_listed(env: dict[str, str], tmp_path: Path) -> None:
    """`send --name '[/x]' --yes` sent every message and then crashed with exit 1, so a script retrying on
    failure sent twice; and one such name made `campaign list` crash for every campaign."""
    contacts = Path(__file__).resolve().parents[1] / "config" / "examples" / "contacts.csv"
    sent = run_cli(
        env, "send", str(contacts), *SEND, "--name", "[/x] [bold]launch", "--yes", "--rejects", str(tmp_path / "r.csv")
    )
    assert sent.exit_code == 0, sent.stderr
    assert "Traceback" not in sent.stderr
    listed = run_cli(env, "list")
    assert listed.exit_code == 0 and "[/x] [bold]launch" in listed.stdout
    status = run_cli(env, "status", "1")
    assert status.exit_code == 0 and "campaign 1: [/x] [bold]launch" in status.stdout


def test_escape_sequences_in_the_file_neither_reach_the_terminal_nor_the_phone(
    env: dict[str, str], tmp_path: Path
) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", "Asha\x1b[2J\x1b]0;owned\x07")
    planned = run_cli(env, "plan", str(contacts), *US_SMS, "--message", "Hi #name#!", "--save", "--json")
    assert planned.exit_code == 0, planned.stderr
    summary = orjson.loads(planned.stdout)
    assert "1 messages had control characters in their values; they were removed" in summary["warnings"]
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    with engine.connect() as connection:
        texts = {row[0] for row in connection.exec_driver_sql("SELECT body FROM messages")}
    engine.dispose()
    assert texts == {"Hi Asha[2J]0;owned!", "Hi Ravi!"}


def test_a_control_character_typed_into_the_message_is_refused_where_it_is(env: dict[str, str], tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", "Asha")
    planned = run_cli(env, "plan", str(contacts), *US_SMS, "--message", "Hi #name#,\x1b[5m sale!", "--save")
    assert planned.exit_code == 1
    assert planned.stderr.strip() == (
        "error: the message holds the control character U+001B at character 11; remove it"
    )
    assert campaign_count(env) == 0


def test_a_bidirectional_override_is_a_warning_in_the_plan(env: dict[str, str], tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", "Asha")
    planned = run_cli(env, "plan", str(contacts), *US_SMS, "--message", "Log in at \u202emoc.knab\u202c today")
    assert planned.exit_code == 0, planned.stderr
    assert "2 messages hold a right-to-left or left-to-right override" in planned.stderr
    assert "Log in at \\u202emoc.knab\\u202c today" in planned.stdout  # the preview shows it, not obeys it


@pytest.mark.parametrize("name", ["[/oops]", "[red]x[/red]", ":warning:"])
def test_a_markup_file_name_is_printed_as_it_is(env: dict[str, str], tmp_path: Path, name: str) -> None:
    contacts = tmp_path / f"{name}.csv"  # a `/` in the name is a folder on the way
    contacts.parent.mkdir(parents=True, exist_ok=True)
    write_contacts(contacts, "Asha")
    planned = run_cli(env, "plan", str(contacts), *US_SMS, "--message", "Hello")
    assert planned.exit_code == 0, planned.stderr
    assert f"{name}.csv" in planned.stdout


def test_names_and_reasons_too_long_to_keep_are_refused_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    """PostgreSQL refuses a value longer than its column in the middle of the write; the engine says so first."""
    contacts = write_contacts(tmp_path / "contacts.csv", "Asha")
    planned = run_cli(env, "plan", str(contacts), *US_SMS, "--message", "Hello", "--name", "n" * 201, "--save")
    assert planned.exit_code == 1
    assert planned.stderr.strip() == "error: the campaign name has 201 characters; the most is 200"
    assert campaign_count(env) == 0
    added = run_cli(env, "suppress", "add", "+14155550199", "--reason", "r" * 5000)
    assert added.exit_code == 1
    assert added.stderr.strip() == "error: the reason has 5,000 characters; the most is 200"


def test_a_value_of_control_codes_alone_is_an_empty_value(env: dict[str, str], tmp_path: Path) -> None:
    """Removed before the empty check, so the placeholder's default stands in, or the row is refused."""
    contacts = write_contacts(tmp_path / "contacts.csv", "\x1b\x08")
    planned = run_cli(env, "plan", str(contacts), *US_SMS, "--message", "Hi #name|friend#!", "--save", "--json")
    assert planned.exit_code == 0, planned.stderr
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    with engine.connect() as connection:
        texts = {row[0] for row in connection.exec_driver_sql("SELECT body FROM messages")}
    engine.dispose()
    assert texts == {"Hi friend!", "Hi Ravi!"}
    refused = run_cli(env, "plan", str(contacts), *US_SMS, "--message", "Hi #name#!", "--json", "--force")
    assert orjson.loads(refused.stdout)["rejected_by_reason"] == {"empty value for #name#": 1}


def test_a_tab_in_the_text_is_kept(env: dict[str, str], tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", "Asha")
    planned = run_cli(env, "plan", str(contacts), *US_SMS, "--message", "Hi\t#name#")
    assert planned.exit_code == 0, planned.stderr
    assert "control character" not in planned.stderr


def test_typed_values_too_long_to_keep_are_refused_before_the_file_is_read(env: dict[str, str], tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", "Asha")
    long_sender = ["--channel", "sms", "--provider", "noxitel", "--sender", "S" * 101]
    planned = run_cli(env, "plan", str(contacts), *long_sender, "--message", "Hello", "--save")
    assert (planned.exit_code, planned.stderr.strip()) == (1, "error: the sender has 101 characters; the most is 100")
    assert not (tmp_path / "contacts.rejects.csv").exists()  # refused before reading: no rejects written


def test_a_line_break_in_a_value_cannot_start_a_line_of_its_own(env: dict[str, str], tmp_path: Path) -> None:
    contacts = tmp_path / "contacts\nerror: all sent.csv"
    contacts.write_text("phone,name\n")
    planned = run_cli(env, "plan", str(contacts), *US_SMS, "--message", "Hi")
    assert planned.exit_code == 1
    assert planned.stderr == f"error: {tmp_path}/contacts\\nerror: all sent.csv has a header but no rows\n"
