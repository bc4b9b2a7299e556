"""The files the engine writes (rejects, reports, the SQLite database): never through a planted link, never over
the contact file, never over an existing file without `--force`, readable by their owner only, and safe to open
in a spreadsheet without changing a plain number."""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from sqlalchemy import text

from engine.csvsafe import write_csv
from engine.store.db import open_database
from tests.fixtures.cli import SEND, run_cli

#: `plan` options that need no provider: an order SMS under its DLT template, the balance not read.
PLAN = [*SEND, "--skip-balance"]
PRECIOUS = "name,mobile\nsomeone else's list,+919000000000\n"


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems run with (0022), under which a plain `open` makes files world-readable."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def contacts(tmp_path: Path) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_text(
        "name,mobile,order\n"
        "Asha,+919876543210,A1\n"
        "Ravi,+91 91234 56789,A2\n"
        'Meera,"=HYPERLINK(""http://x"")",A3\n'
        "Sita,12345,A4\n",
        encoding="utf-8",
    )
    return path


def plan(env: dict[str, str], path: Path, *extra: str) -> tuple[int, str, str]:
    done = run_cli(env, "plan", str(path), *PLAN, *extra)
    return done.exit_code, done.stdout, done.stderr


def stored_campaigns(env: dict[str, str]) -> list[object]:
    listed = run_cli(env, "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    campaigns: list[object] = orjson.loads(listed.stdout)
    return campaigns


def flat(output: str) -> str:
    """Output with its runs of blanks and its line breaks as single spaces (tables pad, long lines wrap)."""
    return " ".join(output.split())


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.mark.parametrize("dangling", [False, True], ids=["to a file", "to nothing yet"])
def test_a_link_planted_at_the_default_rejects_path_is_not_followed(
    env: dict[str, str], tmp_path: Path, dangling: bool
) -> None:
    path = contacts(tmp_path)
    victim = tmp_path / "victim.csv"
    if not dangling:
        victim.write_text(PRECIOUS)
    planted = tmp_path / "contacts.rejects.csv"
    planted.symlink_to(victim)
    code, out, err = plan(env, path, "--json")
    assert code == 0, err
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert (not victim.exists()) if dangling else victim.read_text() == PRECIOUS
    summary = orjson.loads(out)
    fresh = tmp_path / "contacts.rejects-2.csv"
    assert summary["rejects_file"] == str(fresh)
    assert f"{planted} already exists (--force replaces it): the rejects went to {fresh}" in summary["warnings"]
    assert [row[0] for row in csv.reader(fresh.open(encoding="utf-8-sig"))] == ["line", "4", "5"]


def test_the_user_is_told_where_the_rejects_went_instead(env: dict[str, str], tmp_path: Path) -> None:
    path = contacts(tmp_path)
    (tmp_path / "contacts.rejects.csv").symlink_to(tmp_path / "victim.csv")
    code, out, err = plan(env, path)
    assert code == 0, err
    fresh = tmp_path / "contacts.rejects-2.csv"
    assert f"rejects {fresh}" in flat(out)
    assert f"warning: {tmp_path / 'contacts.rejects.csv'} already exists (--force replaces it): " in flat(err)
    assert f"the rejects went to {fresh}" in flat(err)


def test_the_same_plan_made_again_finds_its_rejects_file_as_it_left_it(env: dict[str, str], tmp_path: Path) -> None:
    """Plan, then send: the rejects are the same, so there is one file and nothing to warn about; once the
    contacts change, the earlier file is kept and the new rejects go beside it."""
    path = contacts(tmp_path)
    assert plan(env, path)[0] == 0
    code, _, err = plan(env, path)
    assert code == 0 and "already exists" not in err
    assert sorted(p.name for p in tmp_path.glob("contacts.rejects*")) == ["contacts.rejects.csv"]
    path.write_text(path.read_text() + "Ravi,999,A5\n")
    code, _, err = plan(env, path)
    assert code == 0 and "the rejects went to" in flat(err)
    assert sorted(p.name for p in tmp_path.glob("contacts.rejects*")) == [
        "contacts.rejects-2.csv",
        "contacts.rejects.csv",
    ]


@pytest.mark.parametrize(
    ("command", "how", "through_a_link"),
    [
        ("plan", ["--save"], False),
        ("plan", ["--save", "--force"], True),
        ("send", ["--yes"], False),
        ("send", ["--yes", "--force"], True),
    ],
)
def test_rejects_set_to_the_contact_file_is_refused_before_anything_is_stored(
    env: dict[str, str], tmp_path: Path, command: str, how: list[str], through_a_link: bool
) -> None:
    path = contacts(tmp_path)
    before = path.read_bytes()
    rejects = tmp_path / "link.csv" if through_a_link else path
    if through_a_link:
        rejects.symlink_to(path)
    done = run_cli(env, command, str(path), *PLAN, "--rejects", str(rejects), *how)
    assert done.exit_code == 1
    assert f"error: {rejects} is the file being read ({path}): choose another path" in flat(done.stderr)
    assert path.read_bytes() == before
    assert stored_campaigns(env) == []


def test_an_existing_rejects_file_given_is_refused_without_force_and_replaced_with_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = contacts(tmp_path)
    rejects = tmp_path / "mine.csv"
    rejects.write_text(PRECIOUS)
    code, _, err = plan(env, path, "--rejects", str(rejects), "--save")
    assert code == 1
    assert f"error: {rejects} already exists: pass --force to replace it, or choose another path" in flat(err)
    assert rejects.read_text() == PRECIOUS and stored_campaigns(env) == []
    code, _, err = plan(env, path, "--rejects", str(rejects), "--force")
    assert code == 0, err
    assert rejects.read_text(encoding="utf-8-sig").startswith('"line","mobile","reason"')


def test_an_existing_report_file_is_refused_without_force_and_replaced_with_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert plan(env, contacts(tmp_path), "--save")[0] == 0
    out = tmp_path / "results.csv"
    out.write_text(PRECIOUS)
    refused = run_cli(env, "report", "1", "--out", str(out))
    assert refused.exit_code == 1
    assert f"error: {out} already exists: pass --force to replace it, or choose another path" in flat(refused.stderr)
    assert out.read_text() == PRECIOUS
    link = tmp_path / "link.csv"
    link.symlink_to(out)
    assert run_cli(env, "report", "1", "--out", str(link)).exit_code == 1
    assert out.read_text() == PRECIOUS
    replaced = run_cli(env, "report", "1", "--out", str(out), "--force")
    assert replaced.exit_code == 0 and f"wrote 2 rows to {out}" in replaced.stdout
    assert out.read_text(encoding="utf-8-sig").startswith('"line","address"')


def test_a_taken_default_report_name_moves_to_a_fresh_one(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert plan(env, contacts(tmp_path), "--save")[0] == 0
    monkeypatch.chdir(tmp_path)
    Path("campaign-1.csv").write_text(PRECIOUS)
    done = run_cli(env, "report", "1")
    assert done.exit_code == 0 and "wrote 2 rows to campaign-1-2.csv" in done.stdout
    assert Path("campaign-1.csv").read_text() == PRECIOUS and Path("campaign-1-2.csv").exists()


def test_the_database_rejects_and_report_are_readable_by_their_owner_only(
    env: dict[str, str], tmp_path: Path, usual_umask: None
) -> None:
    code, out, err = plan(env, contacts(tmp_path), "--save", "--json")
    assert code == 0, err
    report = tmp_path / "results.csv"
    assert run_cli(env, "report", "1", "--out", str(report)).exit_code == 0
    database = tmp_path / "campaigns.db"
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    try:
        with engine.begin() as connection:  # the -wal and -shm files exist while a connection writes
            connection.execute(text("UPDATE campaigns SET name = 'renamed'"))
            sidecars = [Path(f"{database}-wal"), Path(f"{database}-shm")]
            modes = {p.name: mode(p) for p in [database, *sidecars]}
    finally:
        engine.dispose()
    modes |= {p.name: mode(p) for p in [Path(orjson.loads(out)["rejects_file"]), report]}
    assert modes == dict.fromkeys(
        ["campaigns.db", "campaigns.db-wal", "campaigns.db-shm", "contacts.rejects.csv", "results.csv"], "0o600"
    )


def test_a_replaced_file_is_private_too(env: dict[str, str], tmp_path: Path, usual_umask: None) -> None:
    path = contacts(tmp_path)
    rejects = tmp_path / "mine.csv"
    rejects.write_text(PRECIOUS)
    rejects.chmod(0o644)
    code, _, err = plan(env, path, "--rejects", str(rejects), "--force")
    assert code == 0, err
    assert mode(rejects) == "0o600"


@pytest.mark.parametrize(
    "value",
    [
        " =1+1",
        "\n=1+1",
        "\u00a0=1+1",
        "\ufeff=1+1",
        "\u3000=1+1",
        "\u200b=1+1",
        " \t@SUM(A1)",
        "\uff1d1+1",
        "\uff0b1+1",
        "\uff0d1+1",
        "\uff20SUM(A1)",
        "\nplain",
    ],
)
def test_a_formula_behind_blanks_or_in_full_width_gets_an_apostrophe(value: str, tmp_path: Path) -> None:
    assert written(tmp_path, value) == "'" + value


def test_a_plain_number_stays_as_it_is_and_arithmetic_does_not(tmp_path: Path) -> None:
    values = {
        "+919876543210": "+919876543210",
        "-5": "-5",
        "3.25": "3.25",
        "+91 98765 43210": "'+91 98765 43210",  # a spreadsheet reads the space as an operator
        "+1-555-0100": "'+1-555-0100",  # and this as a subtraction
        "-2+3": "'-2+3",
        "=1+1": "'=1+1",
        "@SUM(A1)": "'@SUM(A1)",
        "Asha": "Asha",
        "a=b": "a=b",
    }
    assert {value: written(tmp_path, value) for value in values} == values


def written(tmp_path: Path, value: str) -> str:
    """The one cell of a file of one column, written by the engine and read back."""
    path = write_csv(tmp_path / f"{len(list(tmp_path.iterdir()))}.csv", {"value": pa.array([value])})
    with path.open(newline="", encoding="utf-8-sig") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["value"] and len(rows) == 2
    return rows[1][0]


def test_a_report_keeps_numbers_as_they_are_and_neutralises_formulas(env: dict[str, str], tmp_path: Path) -> None:
    path = contacts(tmp_path)
    code, out, err = plan(env, path, "--save", "--json")
    assert code == 0, err
    report = tmp_path / "results.csv"
    assert run_cli(env, "report", "1", "--out", str(report)).exit_code == 0
    with report.open(newline="", encoding="utf-8-sig") as file:
        assert [row[1] for row in csv.reader(file)] == ["address", "+919876543210", "+919123456789"]
    with Path(orjson.loads(out)["rejects_file"]).open(newline="", encoding="utf-8-sig") as file:
        assert [row[1] for row in csv.reader(file)] == ["mobile", '\'=HYPERLINK("http://x")', "12345"]
