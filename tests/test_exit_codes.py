"""The exit status of a command that sends says whether the campaign went out, so that cron and scripts notice.

0 sent (or queued, or waiting for its window), 1 an error the engine names, 2 a
command typed wrong, 3 the campaign failed, 4 it finished with nothing taken by
the provider, 5 it stopped before its end (paused, cancelled). The README's
"Exit codes" table says the same.
"""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.cli import EXAMPLE, SEND, campaign
from tests.fixtures.sandbox import Sandbox

SEND_NOW = [*SEND, "--yes", "--skip-balance"]


def test_a_campaign_the_provider_refuses_to_authenticate_exits_3(env: dict[str, str], tmp_path: Path) -> None:
    done = campaign(
        {**env, "NOXITEL_API_KEY": "not-a-key-of-this-account"},
        "send",
        str(EXAMPLE),
        *SEND_NOW,
        "--rejects",
        str(tmp_path / "r.csv"),
    )
    assert done.returncode == 3, done.stderr
    assert "failed" in done.stdout and "Traceback" not in done.stderr


def test_a_campaign_that_runs_out_of_credit_exits_5(env: dict[str, str], sandbox: Sandbox, tmp_path: Path) -> None:
    broke = sandbox.account(credits=0.0)
    done = campaign(
        {**env, "NOXITEL_API_KEY": broke}, "send", str(EXAMPLE), *SEND_NOW, "--rejects", str(tmp_path / "r.csv")
    )
    assert done.returncode == 5, done.stderr
    assert "paused" in done.stdout


def test_a_campaign_whose_every_call_fails_exits_4(env: dict[str, str], sandbox: Sandbox, tmp_path: Path) -> None:
    key = sandbox.account()
    sandbox.faults("/api/v2/sms", *["503"] * 40)  # more than the sender's retries; the next test's sandbox is reset
    done = campaign(
        {**env, "NOXITEL_API_KEY": key}, "send", str(EXAMPLE), *SEND_NOW, "--rejects", str(tmp_path / "r.csv")
    )
    assert done.returncode == 4, (done.stdout, done.stderr)


def test_a_campaign_that_went_out_exits_0(env: dict[str, str], tmp_path: Path) -> None:
    done = campaign(env, "send", str(EXAMPLE), *SEND_NOW, "--rejects", str(tmp_path / "r.csv"))
    assert done.returncode == 0, done.stderr
