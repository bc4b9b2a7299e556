"""A plan that passes does not fail at send time for a reason the plan could have seen: what every provider call
carries (sender, from-address, RCS agent, SMS fallback) is held against what the provider takes, and refused in
one line before anything is stored."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from engine.planning.planner import PlanContext, PlanRefused, PlanRequest, build_plan
from engine.planning.pricing import PriceTable
from engine.store import models
from engine.store.db import open_database
from tests.fixtures.cli import run_cli
from tests.fixtures.sandbox import Sandbox

pytestmark = pytest.mark.cli_env(COLUMNS="200")


def people(tmp_path: Path, first: int = 9_876_543_210) -> Path:
    """Two people with a name, a mobile (`first` and the next: numbers of the test's own) and an email."""
    path = tmp_path / "people.csv"
    path.write_text(f"name,mobile,email\nAsha,+91{first},asha@example.com\nRavi,+91{first + 1},ravi@example.com\n")
    return path


def stored_campaigns(env: dict[str, str]) -> int:
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(models.CAMPAIGNS)).scalar_one())
    finally:
        engine.dispose()


def test_a_pixabits_rcs_agent_id_is_refused_in_one_line_before_anything_is_stored(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Pixabits sends RCS from the agent set in its account, and the send path reads an agent id as a number:
    `acme_rcs_agent` used to pass the plan and stop the first batch with `invalid literal for int()`."""
    contacts = people(tmp_path)
    rcs = ["--channel", "rcs", "--provider", "pixabits", "--message", "Hi #name#, your sale is on", "--skip-balance"]
    for command in (["plan", "--save"], ["send", "--yes"]):
        refused = run_cli(env, *command, str(contacts), *rcs, "--agent-id", "acme_rcs_agent")
        assert (refused.exit_code, refused.stdout) == (1, ""), refused.stderr
        assert refused.stderr == (
            "error: pixabits RCS takes no --agent-id: it sends from the agent set in the pixabits account "
            "(leave the option out)\n"
        )
    assert not (tmp_path / "people.rejects.csv").exists()
    assert stored_campaigns(env) == 0


def test_without_the_agent_id_pixabits_rcs_plans_and_sends(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    contacts = people(tmp_path, 9_376_500_000)
    rcs = ["--channel", "rcs", "--provider", "pixabits", "--message", "Hi #name#, your sale is on", "--skip-balance"]
    sent = run_cli(env, "send", str(contacts), *rcs, "--yes", "--json")
    assert sent.exit_code == 0, sent.stderr
    assert orjson.loads(sent.stdout.strip().splitlines()[-1])["state"] == "completed"
    accepted = sandbox.recipients("POST /v1/rcs/send")
    assert (accepted.get("+919376500000"), accepted.get("+919376500001")) == (1, 1)


def test_a_numeric_noxitel_agent_id_plans_and_sends_with_its_agent(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    contacts = people(tmp_path, 9_376_600_000)
    rcs = ["--channel", "rcs", "--provider", "noxitel", "--message", "Hi #name#, your sale is on", "--skip-balance"]
    refused = run_cli(env, "plan", str(contacts), *rcs, "--agent-id", "acme_rcs_agent")
    assert refused.stderr == "error: noxitel RCS agent ids are numbers; 'acme_rcs_agent' is not one\n"
    sent = run_cli(env, "send", str(contacts), *rcs, "--agent-id", "101", "--yes", "--json")
    assert sent.exit_code == 0, sent.stderr
    assert orjson.loads(sent.stdout.strip().splitlines()[-1])["state"] == "completed"
    sent_body = sandbox.last_body("POST /api/v2/rcs/message")
    assert (sent_body["agentId"], len(sent_body["contacts"])) == (101, 2)


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        ({"channel": "rcs", "provider": "noxitel"}, "noxitel RCS needs an --agent-id"),
        # `isdigit` takes a superscript two, which `int()` does not.
        ({"channel": "rcs", "provider": "noxitel", "agent_id": "²"}, "agent ids are numbers; '²' is not one"),
        # A number no JSON body carries as an integer.
        ({"channel": "rcs", "provider": "noxitel", "agent_id": "9" * 19}, "agent ids are numbers"),
        (
            {"channel": "rcs", "provider": "noxitel", "agent_id": "7", "fallback_message": "Hi", "sender": None},
            "an RCS campaign with a --fallback-message needs a --sender",
        ),
        (
            {"channel": "rcs", "provider": "pixabits", "fallback_message": "Hi"},
            "pixabits RCS takes no --fallback-message: its SMS fallback is set in the pixabits account",
        ),
        ({"sender": "   "}, "an SMS campaign needs a --sender"),
        # Its text would be the one checked against the DLT template, while the message is what goes.
        ({"fallback_message": "Hi #name#"}, "only RCS has an SMS --fallback-message; SMS campaigns send none"),
        ({"sender": "ACME RETAIL LTD"}, "'ACME RETAIL LTD' is not an SMS sender id: up to 11 letters and digits"),
        (
            {"channel": "email", "subject": "Hi", "sender": None},
            "an email campaign needs a --sender (the from-address)",
        ),
        ({"channel": "email", "subject": "Hi"}, "the email --sender 'ACMEIN' is not an email address"),
        ({"channel": "email", "subject": "Hi", "sender": " news@acme.in"}, "' news@acme.in' is not an email address"),
    ],
)
def test_what_every_call_carries_is_checked_when_planning(
    options: dict[str, object], refusal: str, tmp_path: Path
) -> None:
    chosen: dict[str, object] = {"channel": "sms", "provider": "pixabits", "message": "Hi #name#", "sender": "ACMEIN"}
    chosen.update(options)
    request = PlanRequest(contacts=people(tmp_path), **chosen)  # type: ignore[arg-type]
    with pytest.raises(PlanRefused, match=refusal.replace("(", r"\(").replace(")", r"\)")) as refused:
        build_plan(request, PlanContext(prices=PriceTable.load()))
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "people.rejects.csv").exists()  # refused before the file was read


def test_text_noxitel_would_read_as_its_own_placeholder_is_refused_where_it_renders(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Noxitel renders `#word#` in an SMS or RCS text from each contact's values, so `#123#` meant as text made it
    refuse every call for want of a value; Pixabits sends it as written."""
    contacts = str(people(tmp_path))
    sms = ["--sender", "ACMEIN", "--message", "Hi #name#, use code #123# today", "--skip-balance"]
    refused = run_cli(env, "plan", contacts, "--provider", "noxitel", *sms)
    assert (refused.exit_code, refused.stderr) == (
        1,
        "error: noxitel reads #123# as a placeholder of its own and would refuse the message for want of its value: "
        "write it apart (such as #123 #) or name a column (in the message)\n",
    )
    assert run_cli(env, "plan", contacts, "--provider", "pixabits", *sms).exit_code == 0
    rcs = ["--channel", "rcs", "--provider", "noxitel", "--agent-id", "7", "--sender", "ACMEIN", "--skip-balance"]
    fallback = run_cli(env, "plan", contacts, *rcs, "--message", "Hi #name#", "--fallback-message", "Code #1A#: sale")
    assert fallback.exit_code == 1 and fallback.stderr.endswith("(in the fallback message)\n")
