"""Hostile and careless input: memory follows the size of the input, and a value that cannot be right is refused
for what it is, by the real `campaign` command on real files."""

from __future__ import annotations

import csv
import os
import tracemalloc
from pathlib import Path

import orjson
import pyarrow as pa

from engine import gsm
from engine.planning.contacts import MAX_COLUMNS
from engine.planning.phones import TOO_LONG
from engine.planning.render import encode
from tests.fixtures.cli import campaign_measured

#: Every plan here: an SMS whose balance is not asked (no provider needed).
PLAN = ["plan", "--provider", "pixabits", "--sender", "ACMEIN", "--message", "Hi #name#", "--skip-balance", "--json"]
#: Slack over the file-size bound, for what a run may allocate more or less than another (allocator, caches).
SLACK = 48 * 1024 * 1024


def contacts(path: Path, junk: int, extra: list[str]) -> Path:
    """100 valid mobiles, `junk` distinct values that are no number at all, then the `extra` cells."""
    valid = [f"98{i:08d}" for i in range(100)]
    mobiles = valid + [f"call me at home {i}" for i in range(junk)] + extra
    path.write_text("name,mobile\n" + "".join(f"Asha,{mobile}\n" for mobile in mobiles))
    return path


def test_a_cell_longer_than_any_number_is_refused_for_its_length_and_memory_stays_bounded(tmp_path: Path) -> None:
    """Unrecognised values used to be laid out at the width of the longest: 5,000 junk values and one
    100,000-character cell took gigabytes. Now the long cell is refused for its length, and planning the file
    costs about what planning it without that cell costs."""
    env = {**os.environ, "CAMPAIGN_DATABASE_URL": f"sqlite:///{tmp_path / 'campaigns.db'}"}
    plain = contacts(tmp_path / "plain.csv", 5_000, [])
    hostile = contacts(tmp_path / "hostile.csv", 5_000, ["9" * 100_000])
    rejects = tmp_path / "hostile.rejects.csv"

    base, base_peak = campaign_measured(env, *PLAN, str(plain), "--rejects", str(tmp_path / "plain.rejects.csv"))
    done, peak = campaign_measured(env, *PLAN, str(hostile), "--rejects", str(rejects))

    assert base.returncode == 0 and done.returncode == 0, done.stderr
    assert peak - base_peak < 20 * hostile.stat().st_size + SLACK, (peak, base_peak)
    with rejects.open(newline="", encoding="utf-8-sig") as file:
        reasons = {row["line"]: row["reason"] for row in csv.DictReader(file)}
    assert reasons[str(5_100 + 2)] == TOO_LONG  # the header is line 1, the valid rows 2-101, the junk 102-5101


def test_a_file_of_a_million_columns_is_refused_at_its_header_in_one_line(tmp_path: Path) -> None:
    """A 2 MB file of 1,000,000 empty columns used to take gigabytes to read; its header alone says it is no
    contact list."""
    env = {**os.environ, "CAMPAIGN_DATABASE_URL": f"sqlite:///{tmp_path / 'campaigns.db'}"}
    wide = tmp_path / "wide.csv"
    wide.write_text("name,mobile" + "," * 1_000_000 + "\nAsha,9876543210" + "," * 1_000_000 + "\n")
    base, base_peak = campaign_measured(env, *PLAN, str(contacts(tmp_path / "plain.csv", 0, [])))

    done, peak = campaign_measured(env, *PLAN, str(wide))

    assert base.returncode == 0 and done.returncode == 1
    assert f"has 1,000,002 columns in its first line; a contact list has at most {MAX_COLUMNS:,}" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert peak - base_peak < 20 * wide.stat().st_size + SLACK, (peak, base_peak)


def test_segments_of_one_very_long_message_are_counted_in_memory_that_follows_the_texts() -> None:
    """Messages were laid out in one matrix as wide as the longest: 1,000 short emoji texts beside one of
    50,000 emoji took 72 s and 1.28 GB. Each is still counted exactly as `gsm.segments` counts it."""
    texts = [f"Hi {'😀' * 40} #{i}" for i in range(200)] + ["Hi " + "😀" * 20_000]
    size = sum(len(text.encode()) for text in texts)

    tracemalloc.start()
    try:
        counted = encode(pa.array(texts)).segments
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert counted.tolist() == [gsm.segments(text) for text in texts]
    assert peak < 20 * size + 8 * 1024 * 1024, (peak, size)


def test_a_file_that_never_ends_is_refused_at_the_limit_in_one_line(tmp_path: Path) -> None:
    """`/dev/zero` as the contact list or as the HTML body used to end in a MemoryError traceback; now each is
    read up to its limit (`CAMPAIGN_MAX_FILE_MB`, `CAMPAIGN_MAX_HTML_KB`) and refused in one line."""
    env = {
        **os.environ,
        "CAMPAIGN_DATABASE_URL": f"sqlite:///{tmp_path / 'campaigns.db'}",
        "CAMPAIGN_MAX_FILE_MB": "2",
        "CAMPAIGN_MAX_HTML_KB": "64",
    }
    plain = str(contacts(tmp_path / "plain.csv", 0, []))
    email = ["plan", "--channel", "email", "--sender", "news@acme.example", "--subject", "Hi", "--skip-balance"]

    endless_list, list_peak = campaign_measured(env, *PLAN, "/dev/zero")
    endless_body, body_peak = campaign_measured(env, *email, "--html", "/dev/zero", plain)
    suppressed, _ = campaign_measured(env, "suppress", "import", "/dev/zero")

    assert endless_list.returncode == endless_body.returncode == suppressed.returncode == 1
    assert "/dev/zero is larger than 2.0 MiB (CAMPAIGN_MAX_FILE_MB): not read" in endless_list.stderr
    assert "/dev/zero is larger than 64 KiB (CAMPAIGN_MAX_HTML_KB): not read" in endless_body.stderr
    assert "/dev/zero is larger than 2.0 MiB (CAMPAIGN_MAX_FILE_MB): not read" in suppressed.stderr
    for done in (endless_list, endless_body, suppressed):
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert max(list_peak, body_peak) < 512 * 1024 * 1024


def test_a_contact_file_over_the_limit_is_refused_by_its_size(tmp_path: Path) -> None:
    env = {**os.environ, "CAMPAIGN_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}", "CAMPAIGN_MAX_FILE_MB": "0.01"}
    big = contacts(tmp_path / "big.csv", 1_000, [])

    done, _ = campaign_measured(env, *PLAN, str(big))

    assert done.returncode == 1
    assert f"{big} is larger than 10 KiB (CAMPAIGN_MAX_FILE_MB): not read" in done.stderr


def test_a_row_whose_sms_would_take_more_parts_than_operators_take_is_refused(tmp_path: Path) -> None:
    """A 100,000-character template used to plan 654 parts per SMS. Now each row whose message would take
    more than `CAMPAIGN_MAX_SMS_PARTS` (10) parts is refused, saying how many it would take; the rest go."""
    env = {**os.environ, "CAMPAIGN_DATABASE_URL": f"sqlite:///{tmp_path / 'campaigns.db'}"}
    names = tmp_path / "names.csv"
    names.write_text("name,mobile\nAsha,9876543210\n" + "B" * 20 + ",9876543211\n")
    message = "A" * 1_519 + " #name#"  # 1,524 characters with Asha: 10 parts of 153; 1,540 with the long name
    rejects = tmp_path / "names.rejects.csv"

    done, _ = campaign_measured(
        env, *PLAN[:5], "--message", message, "--skip-balance", str(names), "--rejects", str(rejects), "--json"
    )

    assert done.returncode == 0, done.stderr
    assert '"messages":1' in done.stdout.replace(" ", "")
    with rejects.open(newline="", encoding="utf-8-sig") as file:
        refused = {row["line"]: row["reason"] for row in csv.DictReader(file)}
    assert refused == {"3": "message would take 11 SMS parts; the most is 10 (CAMPAIGN_MAX_SMS_PARTS)"}


def test_a_column_named_like_an_earlier_one_is_named_in_a_warning(tmp_path: Path) -> None:
    """Duplicate header names were renamed silently, so `#name#` quietly meant the first of them."""
    env = {**os.environ, "CAMPAIGN_DATABASE_URL": f"sqlite:///{tmp_path / 'campaigns.db'}"}
    twice = tmp_path / "twice.csv"
    twice.write_text("name,mobile,Name\nAsha,9876543210,Ravi\n")

    done, _ = campaign_measured(env, *PLAN, str(twice))

    assert done.returncode == 0, done.stderr
    warning = f"{twice}: column 3 is named 'Name' like an earlier one: it is #name_2# in a message"
    assert warning in orjson.loads(done.stdout)["warnings"]
