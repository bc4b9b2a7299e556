"""`campaign demo` as a new user runs it: no settings, no server, any directory, any kind of install."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAMPAIGN = Path(sys.executable).with_name("campaign")
#: Statuses no later report changes.
FINAL = {"delivered", "read", "failed", "rejected", "undeliverable", "expired", "cancelled"}
SHIPPED_CONTACTS = 500


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """What a new machine has once the engine is installed: a home folder, a PATH that finds `campaign`,
    and no CAMPAIGN_, PIXABITS_ or NOXITEL_ variable."""
    path = os.pathsep.join((str(CAMPAIGN.parent), os.environ.get("PATH", os.defpath)))
    return {"HOME": str(home), "PATH": path, **extra}


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", timeout=120, stdin=subprocess.DEVNULL
    )


def summary_number(output: str, label: str) -> int:
    found = re.search(rf"^{label}\s+([\d,]+)", output, re.MULTILINE)
    assert found, f"no {label!r} in the plan summary:\n{output}"
    return int(found[1].replace(",", ""))


def status_rows(output: str) -> dict[str, int]:
    """The final status table's rows, the total row included."""
    return {name: int(count.replace(",", "")) for name, count in re.findall(r"│ (\w+)\s+│\s+([\d,]+) │", output)}


def assert_finished(done: subprocess.CompletedProcess[str], provider: str, planned: int) -> dict[str, int]:
    """The demo ended well: its plan covered `planned` contacts and every one of them has a final status."""
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert f"embedded {provider} sandbox" in out
    assert (summary_number(out, "rows read"), summary_number(out, "valid")) == (planned, planned)
    assert summary_number(out, "messages") == planned
    assert f"sms via {provider}" in out
    rows = status_rows(out)
    total = rows.pop("total")
    assert total == planned and sum(rows.values()) == planned, out
    assert set(rows) <= FINAL, f"not every recipient is final: {rows}"
    assert rows.get("delivered", 0) > planned // 2
    assert f"sms via {provider}: completed" in out
    return rows


def test_demo_runs_a_whole_campaign_on_a_new_machine(tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    done = run([str(CAMPAIGN), "demo"], cwd, clean_env(home))
    assert_finished(done, "noxitel", SHIPPED_CONTACTS)
    assert summary_number(done.stdout, "batches") > 1
    database = re.search(r"^database: (.+) \(temporary", done.stdout, re.MULTILINE)
    assert database, done.stdout
    assert not Path(database[1]).exists() and not Path(database[1]).parent.exists()
    assert list(cwd.iterdir()) == [] and list(home.iterdir()) == []


def test_demo_ignores_the_users_settings_and_keeps_its_database_on_request(tmp_path: Path) -> None:
    """Real-looking keys, URLs, a broker and a database, in the environment and in `.env`: the demo still
    runs on the embedded sandbox, in local mode, and writes nowhere but its own database."""
    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    real_database = tmp_path / "real.db"
    settings = {
        "CAMPAIGN_DATABASE_URL": f"sqlite:///{real_database}",
        "CAMPAIGN_BROKER_URL": "redis://127.0.0.1:9/0",
        "PIXABITS_BASE_URL": "http://127.0.0.1:9",
        "PIXABITS_API_KEY": "live-key",
        "NOXITEL_BASE_URL": "http://127.0.0.1:9/api/v2",
        "NOXITEL_API_KEY": "live-key",
    }
    (cwd / ".env").write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    done = run(
        [str(CAMPAIGN), "demo", "--provider", "pixabits", "--contacts", "40", "--keep"],
        cwd,
        clean_env(home, **settings),
    )
    rows = assert_finished(done, "pixabits", 40)
    assert not real_database.exists()
    kept = home / ".cache" / "campaign-engine" / "demo.db"
    assert kept.is_file() and f"database: {kept} (kept)" in done.stdout

    follow_ups = re.findall(r"^  (CAMPAIGN_DATABASE_URL=.+ campaign .+)$", done.stdout, re.MULTILINE)
    status_command, report_command = follow_ups[:2]
    assert status_command.endswith(" campaign status 1")
    assert report_command.endswith(" campaign report 1 --out results.csv")
    # Pasted into a shell as printed, they read the kept database and nothing of the settings above.
    shown = run(["sh", "-c", status_command], cwd, clean_env(home))
    assert shown.returncode == 0, shown.stderr
    assert {name: count for name, count in status_rows(shown.stdout).items() if name != "total"} == rows
    reported = run(["sh", "-c", report_command], cwd, clean_env(home))
    assert reported.returncode == 0, reported.stderr
    assert len((cwd / "results.csv").read_text(encoding="utf-8").splitlines()) == 1 + 40


def test_demo_runs_from_a_plain_wheel_install(tmp_path: Path) -> None:
    """Built and installed like any package (no editable checkout to lean on), the demo finds its contacts,
    templates and migrations inside the installed package."""
    source = tmp_path / "source"
    # A copy, so that building leaves nothing in the checkout; the engine/config link is kept as a link.
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "__pycache__", "*.egg-info", "build", "dist", "*.db*", ".pytest_cache", "tests", "*.whl"
        ),
    )
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source)],
        tmp_path,
        dict(os.environ),
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    installed = run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        tmp_path,
        dict(os.environ),
    )
    assert installed.returncode == 0, installed.stderr

    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    done = run(
        [sys.executable, "-c", "import engine; print(engine.__file__); from engine.cli.app import run; run()", "demo"],
        cwd,
        clean_env(home, PYTHONPATH=str(site)),
    )
    assert Path(done.stdout.splitlines()[0]).is_relative_to(site), done.stdout
    assert_finished(done, "noxitel", SHIPPED_CONTACTS)
