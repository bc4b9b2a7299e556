"""`campaign send`, `status`, `pause`, `resume` and `cancel` as a marketer runs them, against the sandbox."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from engine.sandbox.config import SandboxConfig
from engine.store import models
from engine.store.db import open_database
from tests.fixtures.campaigns import phones
from tests.fixtures.cli import EXAMPLE, SEND, SEND_PIXABITS, campaign, run_cli
from tests.fixtures.polling import eventually
from tests.fixtures.sandbox import Sandbox, settled_counts

pytestmark = pytest.mark.cli_env(COLUMNS="200")


def contacts(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_text("name,mobile,order\n" + "".join(f"Asha{i},+91 90000 {i:05d},A{i}\n" for i in range(count)))
    return path


def test_send_runs_a_campaign_and_reports_it(env: dict[str, str], sandbox: Sandbox, tmp_path: Path) -> None:
    done = campaign(env, "send", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"), "--yes", "--json")
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert (result["state"], result["submitted"], result["failed"], result["ambiguous"]) == ("completed", 20, 0, 0)
    accepted = sandbox.endpoint("POST /api/v2/sms")["recipients"]
    assert len(accepted) == 20 and set(accepted.values()) == {1}
    shown = orjson.loads(campaign(env, "status", str(result["campaign_id"]), "--json").stdout)
    assert shown["counts"] == {"submitted": 20} and shown["state"] == "completed"
    assert shown["delivery_rate"] == 0.0 and shown["fallback"] == 0  # no reports yet: nothing delivered
    assert shown["first_submit"] and shown["last_submit"] and shown["planned_at"] and shown["last_report"] is None
    table = campaign(env, "status", str(result["campaign_id"]))
    assert "submitted" in table.stdout and "completed" in table.stdout
    again = campaign(env, "send", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"), "--force")
    assert again.returncode == 1 and "already went out 1 time(s) in the last day" in again.stderr


def test_a_campaign_that_reached_no_provider_is_no_repeat(env: dict[str, str], tmp_path: Path) -> None:
    """A draft cancelled before it went out sent nothing: sending the same file and text is no repeat."""
    saved = run_cli(env, "plan", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"), "--save", "--json")
    campaign_id = orjson.loads(saved.stdout)["campaign_id"]
    cancelled = run_cli(env, "cancel", str(campaign_id), "--yes")
    assert cancelled.exit_code == 0, cancelled.stderr
    sent = run_cli(env, "send", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"), "--yes", "--force")
    assert sent.exit_code == 0, sent.stderr
    assert "already went out" not in sent.stderr


def test_resuming_a_saved_draft_asks_like_send(env: dict[str, str], sandbox: Sandbox, tmp_path: Path) -> None:
    """A draft was only planned: sending it spends money, so `resume` wants a yes as `send` does."""
    saved = run_cli(env, "plan", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"), "--save", "--json")
    campaign_id = str(orjson.loads(saved.stdout)["campaign_id"])
    refused = campaign(env, "resume", campaign_id)
    assert refused.returncode == 1 and "nothing was sent: add --yes" in refused.stderr
    assert sandbox.endpoint("POST /api/v2/sms") == {}
    sent = campaign(env, "resume", campaign_id, "--yes", "--json")
    assert sent.returncode == 0, sent.stderr
    assert orjson.loads(sent.stdout)["submitted"] == 20


def test_nothing_is_sent_without_a_yes(env: dict[str, str], sandbox: Sandbox, tmp_path: Path) -> None:
    done = campaign(env, "send", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"))
    assert done.returncode == 1
    assert "add --yes" in done.stderr and "Traceback" not in done.stderr
    assert sandbox.endpoint("POST /api/v2/sms") == {}
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    with engine.connect() as connection:
        assert connection.execute(select(models.Campaign.id)).all() == []
    engine.dispose()


def test_test_to_sends_the_first_message_to_test_numbers_only(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    done = campaign(
        env,
        "send",
        str(EXAMPLE),
        *SEND,
        "--rejects",
        str(tmp_path / "r.csv"),
        "--test-to",
        "98765 43210, +91 91234 56789",
    )
    assert done.returncode == 0, done.stderr
    assert set(sandbox.endpoint("POST /api/v2/sms")["recipients"]) == {"+919876543210", "+919123456789"}
    body = sandbox.last_body("POST /api/v2/sms")
    assert body["contacts"][0]["parameters"] == {"v1": "Aarav", "v2": "ORD10234"}
    assert "test message sent to +91******3210" in done.stdout and "9876543210" not in done.stdout


def test_ctrl_c_pauses_and_resume_sends_exactly_the_rest(env: dict[str, str], sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.configure(latency_ms=400)
    path = contacts(tmp_path, 400)
    env = {**env, "CAMPAIGN_SEND_CONCURRENCY": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "send",
            str(path),
            *SEND[:4],
            "--message",
            "Hi #name#, order #order#",
            "--batch-size",
            "40",
            "--yes",
            "--json",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    batches = models.Batch.__table__

    def submitted() -> int:
        with engine.connect() as connection:
            return len(connection.execute(select(batches.c.id).where(batches.c.state == "submitted")).all())

    eventually(submitted, lambda count: count >= 2, "the first batches to go through", timeout=60, every=0.05)
    process.send_signal(signal.SIGINT)  # interrupted once the first batches are through
    out, err = process.communicate(timeout=60)
    assert process.returncode == 5, err  # stopped before its end (README, "Exit codes")
    paused = orjson.loads(out.strip().splitlines()[-1])
    assert paused["state"] == "paused" and "campaign resume" in paused["reason"]
    assert 0 < paused["submitted"] < 400
    sandbox.configure(latency_ms=0)
    resumed = campaign(env, "resume", str(paused["campaign_id"]), "--json")
    assert resumed.returncode == 0, resumed.stderr
    final = orjson.loads(resumed.stdout.strip().splitlines()[-1])
    assert (final["state"], final["submitted"]) == ("completed", 400)
    accepted = sandbox.endpoint("POST /api/v2/sms")["recipients"]
    assert len(accepted) == 400 and set(accepted.values()) == {1}
    engine.dispose()


def test_pause_resume_and_cancel_of_a_saved_campaign(env: dict[str, str], sandbox: Sandbox, tmp_path: Path) -> None:
    saved = campaign(env, "plan", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"), "--save", "--json")
    campaign_id = str(orjson.loads(saved.stdout)["campaign_id"])
    refused = campaign(env, "pause", campaign_id)
    assert refused.returncode == 1 and "only a running, scheduled or waiting one can pause" in refused.stderr
    cancelled = campaign(env, "cancel", campaign_id, "--yes")
    assert cancelled.returncode == 0 and "20 messages will not be sent" in cancelled.stdout
    assert orjson.loads(campaign(env, "status", campaign_id, "--json").stdout)["counts"] == {"cancelled": 20}
    again = campaign(env, "resume", campaign_id)
    assert again.returncode == 1 and "cancelled; it cannot be sent" in again.stderr
    assert sandbox.endpoint("POST /api/v2/sms") == {}


def test_a_broker_with_the_embedded_sandbox_is_refused_by_name(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "CAMPAIGN_BROKER_URL": "redis://127.0.0.1:6379/0", "NOXITEL_BASE_URL": "sandbox"}
    done = campaign(env, "send", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"), "--yes", "--skip-balance")
    assert done.returncode == 1
    assert "NOXITEL_BASE_URL is 'sandbox'" in done.stderr and "Traceback" not in done.stderr


def test_status_of_an_unknown_campaign_is_one_line(env: dict[str, str]) -> None:
    done = campaign(env, "status", "999")
    assert done.returncode == 1 and "no campaign 999" in done.stderr


def test_resend_ambiguous_asks_then_sends_only_the_uncertain(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.faults("/api/v2/sms", "drop")
    sent = campaign(env, "send", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"), "--yes", "--json")
    result = orjson.loads(sent.stdout.strip().splitlines()[-1])
    assert (result["state"], result["ambiguous"]) == ("completed", 20)
    campaign_id = str(result["campaign_id"])
    early = campaign(env, "resend-ambiguous", campaign_id, "--yes")  # their reports may still come
    assert early.returncode == 1
    assert "nothing was re-sent: 20 fell in doubt too recently: their reports may clear them until " in early.stderr
    assert sandbox.endpoint("POST /api/v2/sms")["requests"] == 1  # only the first, dropped call
    waited = {**env, "CAMPAIGN_RESEND_AFTER_MINUTES": "0"}  # as if the report window had passed
    refused = campaign(waited, "resend-ambiguous", campaign_id)
    assert refused.returncode == 1 and "add --yes" in refused.stderr
    again = campaign(waited, "resend-ambiguous", campaign_id, "--yes", "--json")
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout.strip().splitlines()[-1])["counts"] == {"submitted": 20}
    nothing = campaign(env, "resend-ambiguous", campaign_id, "--yes")
    assert nothing.returncode == 1 and "no ambiguous messages" in nothing.stderr


def test_resend_ambiguous_now_sends_the_recent_doubt_too_and_says_they_may_get_it_twice(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.faults("/api/v2/sms", "drop")
    sent = campaign(env, "send", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"), "--yes", "--json")
    campaign_id = str(orjson.loads(sent.stdout.strip().splitlines()[-1])["campaign_id"])
    asked = campaign(env, "resend-ambiguous", campaign_id, "--now")  # not refused for the window: asked
    assert asked.returncode == 1 and "add --yes" in asked.stderr
    again = campaign(env, "resend-ambiguous", campaign_id, "--now", "--yes", "--json")
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout.strip().splitlines()[-1])["counts"] == {"submitted": 20}


def test_wait_gathers_noxitel_reports_by_polling(env: dict[str, str], sandbox: Sandbox, tmp_path: Path) -> None:
    path = contacts(tmp_path, 50)
    done = campaign(env, "send", str(path), *SEND, "--yes", "--wait", "--json", "--skip-balance")
    assert done.returncode == 0, done.stderr
    counts = orjson.loads(done.stdout.strip().splitlines()[-1])["counts"]
    assert counts == settled_counts(phones(50))


def test_the_embedded_sandbox_run_ends_with_pushed_pixabits_reports(env: dict[str, str], tmp_path: Path) -> None:
    """No provider URL set: the sandbox runs in-process, pushes its reports, and the command stays for them."""
    env = {**env, "PIXABITS_BASE_URL": "sandbox", "PIXABITS_API_KEY": "sandbox"}
    done = campaign(
        env,
        "send",
        str(EXAMPLE),
        *SEND_PIXABITS,
        "--rejects",
        str(tmp_path / "r.csv"),
        "--yes",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    with engine.connect() as connection:
        numbers = connection.execute(select(models.Message.address)).scalars().all()
    engine.dispose()
    assert result["counts"] == settled_counts(numbers, SandboxConfig())


def test_report_and_list(env: dict[str, str], sandbox: Sandbox, tmp_path: Path) -> None:
    sent = campaign(env, "send", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"), "--yes", "--json")
    campaign_id = str(orjson.loads(sent.stdout.strip().splitlines()[-1])["campaign_id"])
    out = tmp_path / "results.csv"
    done = campaign(env, "report", campaign_id, "--out", str(out))
    assert done.returncode == 0 and "wrote 20 rows" in done.stdout
    rows = list(csv.DictReader(out.open(encoding="utf-8-sig")))
    assert list(rows[0]) == [
        "line",
        "address",
        "channel",
        "status",
        "provider_message_id",
        "error",
        "submitted_at",
        "status_at",
        "message",
    ]
    first = rows[0]
    # The line in the uploaded file, the number as it is (a plain number is not a formula), the outcome, the text
    # that went, and when, in the display zone with its offset (CAMPAIGN_TIMEZONE, Asia/Kolkata by default).
    assert [first[k] for k in ("line", "address", "channel", "status")] == ["2", "+917982597919", "sms", "submitted"]
    assert first["provider_message_id"].startswith("samsms_") and first["message"].startswith("Hi Aarav, your order")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+05:30", first["submitted_at"])
    listed = orjson.loads(campaign(env, "list", "--json").stdout)
    assert [(c["campaign_id"], c["state"], c["sent"], c["messages"]) for c in listed] == [
        (int(campaign_id), "completed", 20, 20)
    ]
    assert "20 / 20 (100%)" in campaign(env, "list").stdout


def test_an_unreachable_broker_is_one_clear_error_and_the_campaign_is_kept(env: dict[str, str], tmp_path: Path) -> None:
    broken = {**env, "CAMPAIGN_BROKER_URL": "redis://127.0.0.1:9/0"}  # nothing listens on port 9
    done = campaign(broken, "send", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"), "--yes")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error: cannot reach the broker at CAMPAIGN_BROKER_URL" in done.stderr
    listed = orjson.loads(campaign(env, "list", "--json").stdout)
    assert [(c["state"], c["sent"]) for c in listed] == [("running", 0)]


@pytest.mark.cli_env(CAMPAIGN_TIMEZONE="Asia/Kolkata")
def test_times_are_shown_in_the_display_zone_and_say_which(env: dict[str, str], tmp_path: Path) -> None:
    """Inputs are read in CAMPAIGN_TIMEZONE; status, the list and a default name show times in it, labelled."""
    contacts = tmp_path / "diwali.csv"
    contacts.write_bytes(EXAMPLE.read_bytes())
    sent = run_cli(env, "send", str(contacts), *SEND, "--rejects", str(tmp_path / "r.csv"), "--yes")
    assert sent.exit_code == 0, sent.stderr
    shown = run_cli(env, "status", "1")
    assert re.search(r"planned \d{4}-\d\d-\d\d \d\d:\d\d IST, first sent \d{4}-\d\d-\d\d \d\d:\d\d IST", shown.stdout)
    listed = run_cli(env, "list")
    assert re.search(r"diwali \d{4}-\d\d-\d\d \d\d:\d\d IST", listed.stdout)  # the default name
    assert re.search(r"│ \d{4}-\d\d-\d\d \d\d:\d\d IST\s*│", listed.stdout)  # the created column
    in_utc = run_cli({**env, "CAMPAIGN_TIMEZONE": "UTC"}, "status", "1")
    assert re.search(r"planned \d{4}-\d\d-\d\d \d\d:\d\d UTC", in_utc.stdout)


def test_status_says_who_was_not_sent_for_opting_out_after_the_plan(env: dict[str, str], tmp_path: Path) -> None:
    saved = run_cli(env, "plan", str(EXAMPLE), *SEND, "--rejects", str(tmp_path / "r.csv"), "--save", "--json")
    campaign_id = str(orjson.loads(saved.stdout)["campaign_id"])
    assert run_cli(env, "suppress", "add", "+917982597919").exit_code == 0  # the first contact opts out
    assert run_cli(env, "resume", campaign_id, "--yes").exit_code == 0
    shown = run_cli(env, "status", campaign_id)
    assert "1 not sent: opted out after the campaign was planned" in shown.stdout
    assert orjson.loads(run_cli(env, "status", campaign_id, "--json").stdout)["suppressed_at_send"] == 1
