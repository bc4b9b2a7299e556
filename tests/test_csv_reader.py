"""The contact reader on files as they arrive: a stray quote costs its own line and no more, line numbers are the
lines an editor shows whatever ends them, and a cell too long to be a contact's is refused by its line and column.
Run through the real `campaign plan` on real files, with the memory each run takes."""

from __future__ import annotations

import csv
import os
import sqlite3
from pathlib import Path

import orjson
import pytest

from engine.planning.contacts import (
    MAX_CELL_CHARS,
    MAX_QUOTED_LINES,
    UNCLOSED_QUOTE,
    ContactsError,
    read_contacts,
)
from engine.planning.phones import INVALID
from tests.fixtures.cli import campaign_measured

#: An SMS plan whose balance is not asked (no provider needed).
PLAN = ["plan", "--provider", "pixabits", "--sender", "ACMEIN", "--message", "Hi #name#", "--skip-balance"]
#: Slack over the file-size bound, for what a run may allocate more or less than another (allocator, caches).
SLACK = 48 * 1024 * 1024


def cli_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "CAMPAIGN_DATABASE_URL": f"sqlite:///{tmp_path / 'campaigns.db'}"}


def rejects(path: Path) -> dict[int, str]:
    """Line -> reason of each row in a rejects file."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        return {int(row["line"]): row["reason"] for row in csv.DictReader(file)}


def stored_campaigns(tmp_path: Path) -> int:
    database = tmp_path / "campaigns.db"
    if not database.exists():
        return 0
    with sqlite3.connect(database) as connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return connection.execute("SELECT count(*) FROM campaigns").fetchone()[0] if "campaigns" in tables else 0


def excel_export(path: Path, rows: int, stray_line: int) -> dict[str, int]:
    """A spreadsheet export: cells with a comma quoted, one address over two lines, a wrong number and a
    repeated one late in the file, and a stray quote opening the name on `stray_line`. Returns the lines of the
    rows the test looks at."""
    lines = ["name,mobile,city"]
    marks: dict[str, int] = {}
    line = 1
    for i in range(rows):
        line += 1
        name, mobile, city = f"Person {i}", f"98{i:08d}", '"Pune, MH"' if i % 7 == 0 else "Mumbai"
        if line == stray_line:
            name = '"Asha Rao'
        elif i == 40:
            city, marks["address"] = '"Flat 4,\nMG Road"', line
        elif i == rows - 20:
            mobile, marks["invalid"] = "12345", line
        elif i == rows - 10:
            mobile, marks["duplicate"] = f"98{30:08d}", line
        if i == 30:
            marks["original"] = line
        lines.append(f"{name},{mobile},{city}")
        line += city.count("\n")
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return marks


def test_a_stray_quote_costs_its_own_line_and_the_rows_after_it_are_read(tmp_path: Path) -> None:
    """One stray quote in a 5,008-row export used to run thousands of lines into one rejected row ("rows read
    2,503"). Now only its line is rejected, saying so, the rest keep their lines, and a warning names the line."""
    path = tmp_path / "export.csv"
    marks = excel_export(path, 5_008, stray_line=17)

    done, _ = campaign_measured(cli_env(tmp_path), *PLAN, str(path), "--rejects", str(tmp_path / "r.csv"))

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "rows read 5,008" in " ".join(done.stdout.split())
    assert rejects(tmp_path / "r.csv") == {
        17: UNCLOSED_QUOTE,
        marks["invalid"]: INVALID,
        marks["duplicate"]: f"duplicate of line {marks['original']}",
    }
    about_quotes = [line for line in done.stderr.splitlines() if "quote" in line]
    assert len(about_quotes) == 1, done.stderr
    assert about_quotes[0].startswith(f"warning: {path}: line 17 has an unclosed quote")
    assert f"at most {MAX_QUOTED_LINES} lines" in about_quotes[0]


def test_a_stray_quote_in_a_large_file_is_recovered_in_bounded_memory(tmp_path: Path) -> None:
    """A stray quote with no other quote after it used to refuse a large file with Arrow's "straddling object
    ... (try to increase block size?)". Now the file plans, its line rejected, in about the memory of the same
    file without the quote."""
    rows = [f"Person {i},98{i:08d}" for i in range(300_000)]
    clean, hostile = tmp_path / "clean.csv", tmp_path / "hostile.csv"
    clean.write_text("name,mobile\n" + "\n".join(rows) + "\n")
    rows[15] = '"' + rows[15]
    hostile.write_text("name,mobile\n" + "\n".join(rows) + "\n")
    env = cli_env(tmp_path)

    base, base_peak = campaign_measured(env, *PLAN, "--json", str(clean), "--rejects", str(tmp_path / "c.csv"))
    done, peak = campaign_measured(env, *PLAN, "--json", str(hostile), "--rejects", str(tmp_path / "h.csv"))

    assert base.returncode == 0 and done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert (summary["rows"], summary["messages"]) == (300_000, 299_999)
    assert rejects(tmp_path / "h.csv") == {17: UNCLOSED_QUOTE}
    assert "Traceback" not in done.stderr
    assert peak - base_peak < 20 * hostile.stat().st_size + SLACK, (peak, base_peak)


def test_a_quoted_value_may_run_across_lines_up_to_the_limit(tmp_path: Path) -> None:
    """A multi-line address is one value; a quote still open after `MAX_QUOTED_LINES` lines is unclosed, and
    only its own line is left out."""
    address = "\n".join(f"line {n}" for n in range(MAX_QUOTED_LINES))
    kept = tmp_path / "kept.csv"
    kept.write_text(f'name,mobile,address\nAsha,9876543210,"{address}"\nRavi,9876543211,Pune\n')
    parsed = read_contacts(kept)
    assert parsed.lines.tolist() == [2, 2 + MAX_QUOTED_LINES]
    assert parsed.table.column("address").to_pylist() == [address, "Pune"]
    assert parsed.malformed == [] and parsed.warnings == []

    too_long = tmp_path / "too_long.csv"
    too_long.write_text(f'name,mobile,address\nAsha,9876543210,"{address}\nmore"\nRavi,9876543211,Pune\n')
    parsed = read_contacts(too_long)
    assert parsed.malformed[0] == (2, 'Asha,9876543210,"line 0', UNCLOSED_QUOTE)
    assert parsed.lines.tolist() == [3 + MAX_QUOTED_LINES]  # Ravi; the address's other lines are no rows
    assert len(parsed.warnings) == 1 and "line 2 has an unclosed quote" in parsed.warnings[0]


@pytest.mark.parametrize(
    ("text", "unclosed"),
    [
        ('name,mobile\nAsha,9876543210\nRavi,"9876543211\nSita,9876543212\n', [3]),  # still open at the end
        ('name,mobile\n"Asha,9876543210\nRavi,"9876543211"\nSita,9876543212\n', [2]),  # closed mid-value later
        ('name,mobile\nAsha,"9876543210\nRavi,9876543211\n"Sita,9876543212\n', [2, 4]),
    ],
)
def test_each_unclosed_quote_costs_one_line(tmp_path: Path, text: str, unclosed: list[int]) -> None:
    path = tmp_path / "c.csv"
    path.write_text(text)
    parsed = read_contacts(path)
    assert [line for line, _, reason in parsed.malformed if reason == UNCLOSED_QUOTE] == unclosed
    assert parsed.rows == 3
    assert parsed.lines.tolist() == [line for line in (2, 3, 4) if line not in unclosed]


def test_a_lone_cr_ends_a_line_in_the_rows_and_in_their_numbers(tmp_path: Path) -> None:
    """A bare CR (Excel for Mac) is a line end for the row splitting, so it is one for the numbering too: a file
    mixing CRLF, LF and lone CR, with a lone CR inside a quoted name, used to crash planning (IndexError) or
    plan a row of a 5-line file as "line 6". Its lines are now those an editor shows."""
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        b"name,mobile\r\n"  # 1
        b"Asha,9876543210\r\n"  # 2
        b"Ravi,9876543211\n"  # 3
        b"Sita,9876543212\r"  # 4
        b"Bad,12345\r\n"  # 5
        b'"Meera\rKapoor",9876543213\n'  # 6-7
        b"Worse,999\r"  # 8
        b"Ravi again,9876543211\r"  # 9
    )

    done, _ = campaign_measured(cli_env(tmp_path), *PLAN, "--json", str(path), "--rejects", str(tmp_path / "r.csv"))

    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert summary["rows"] == 7
    assert [preview["line"] for preview in summary["previews"]] == [2, 3, 4]
    assert rejects(tmp_path / "r.csv") == {5: INVALID, 8: INVALID, 9: "duplicate of line 3"}
    parsed = read_contacts(path)
    assert parsed.lines.tolist() == [2, 3, 4, 5, 6, 8, 9]
    assert parsed.table.column("name").to_pylist()[4] == "Meera\rKapoor"


def test_an_old_mac_file_and_a_nul_after_lone_crs_keep_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "mac.csv"
    path.write_bytes(b"name,mobile\rAsha,9876543210\r\rRavi,9876543211\r")
    assert read_contacts(path).lines.tolist() == [2, 4]
    path.write_bytes(b"name,mobile\rAsha,9876543210\r\nRavi,98765\x0043211\r")
    with pytest.raises(ContactsError, match="a NUL byte on line 3"):
        read_contacts(path)


def test_a_50_mb_cell_is_refused_by_its_line_and_column_in_bounded_memory(tmp_path: Path) -> None:
    """A 50 MB cell used to fail with Arrow's "straddling object straddles two block boundaries (try to increase
    block size?)". Now one line names the line, the column and the limit; nothing is stored."""
    path = tmp_path / "huge.csv"
    path.write_bytes(b"mobile,name\n9876543210,Asha\n9876543211," + b"x" * 50_000_000 + b"\n9876543212,Ravi\n")
    small = tmp_path / "small.csv"
    small.write_text("mobile,name\n9876543210,Asha\n")
    env = cli_env(tmp_path)

    _, base_peak = campaign_measured(env, *PLAN, str(small))
    done, peak = campaign_measured(env, *PLAN, "--save", str(path))

    assert done.returncode == 1
    assert done.stderr.strip() == (
        f'error: {path}: line 3, column "name" holds a value of 50,000,000 characters; the longest a cell may be '
        f"is {MAX_CELL_CHARS:,}. Shorten or empty that cell"
    )
    assert stored_campaigns(tmp_path) == 0
    assert peak - base_peak < 20 * path.stat().st_size + SLACK, (peak, base_peak)


def test_a_quoted_cell_over_the_limit_is_refused_wherever_it_sits(tmp_path: Path) -> None:
    """Shorter than Arrow's block, across lines and quoted: refused all the same, with its first line."""
    value = "\n".join(["x" * (MAX_CELL_CHARS // 2)] * 3)
    path = tmp_path / "long.csv"
    path.write_text(f'name,mobile\nAsha,9876543210\n"{value}",9876543211\n')
    with pytest.raises(ContactsError, match=f'line 3, column "name" holds a value of {len(value):,} characters'):
        read_contacts(path)
