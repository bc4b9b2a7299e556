"""Reading a marketer's contact CSV into normalized, de-duplicated, explained rows.

Contact lists come from Excel, Google Sheets and CRMs, so the reader accepts
what those write (UTF-8 with or without BOM, UTF-16, Windows-1252; comma,
semicolon or tab; CRLF; quoted fields; headers in any case) and never guesses
silently: every row that will not be messaged keeps its line number, its raw
address and a reason the person who owns the spreadsheet can act on. Line
numbers are the file's physical lines (the header is line 1), which is also the
spreadsheet's row number for files without line breaks inside quoted cells.

All per-row work is done on whole Arrow columns; `phonenumbers` is only asked
about values the vectorized path does not recognise (see `engine.phones`).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from engine import phones
from engine.csvsafe import write_csv
from engine.errors import CampaignError


class ContactsError(CampaignError):
    """The contact file cannot be used at all; the message says what to fix."""


#: Row outcomes: every row ends in exactly one of these.
OK, REJECTED, DUPLICATE, SUPPRESSED = range(4)

PHONE_COLUMNS = (
    "mobile",
    "mobile_number",
    "mobile_no",
    "phone",
    "phone_number",
    "phone_no",
    "msisdn",
    "number",
    "contact",
    "contact_number",
    "cell",
    "cell_phone",
    "whatsapp",
    "whatsapp_number",
    "to",
)
EMAIL_COLUMNS = ("email", "email_address", "e_mail", "mail", "email_id", "to")

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: What mail systems accept in practice: a dot-atom local part and a domain with a letters-only TLD.
_EMAIL = rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_LABEL}(?:\.{_LABEL})*\.[A-Za-z]{{2,}}$"
INVALID_EMAIL = "not a valid email address"
MISSING_EMAIL = "no email address"
SUPPRESSED_REASON = "on the suppression list (opted out or bounced)"


def column_key(name: str) -> str:
    """The name a header is known by: `Mobile Number`, `mobile-number` and ` MOBILE_NUMBER` are one column."""
    return re.sub(r"[\s_\-]+", "_", name.strip().strip('"').lower()).strip("_")


def _decode(data: bytes, path: Path) -> tuple[str, str]:
    """Decode the bytes, telling the encodings spreadsheets write apart; returns (text, encoding)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
    head = data[:4096]
    if head.count(b"\x00") > len(head) // 4:
        # UTF-16 without a BOM: ASCII text has a zero byte beside every character.
        encoding = "utf-16-le" if head[1:2] == b"\x00" else "utf-16-be"
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            raise ContactsError(f"{path} is not a CSV file (it holds binary data)") from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), "windows-1252"


def _sniff_delimiter(header: str) -> str:
    """The delimiter is whichever of , ; tab | the header line uses most, outside quotes."""
    unquoted = re.sub(r'"[^"]*"', "", header)
    counts = {d: unquoted.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


@dataclass
class ContactFile:
    """The parsed file: every column as text, keyed by `column_key`, and each row's line number."""

    path: Path
    encoding: str
    delimiter: str
    headers: dict[str, str]
    table: pa.Table
    lines: np.ndarray
    malformed: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.table.num_rows + len(self.malformed)


def read_contacts(path: Path) -> ContactFile:
    """Read and parse a contact CSV; a file that cannot be a contact list raises `ContactsError`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ContactsError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ContactsError(f"{path} is a folder, not a CSV file") from None
    except OSError as exc:
        raise ContactsError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data.startswith(b"PK\x03\x04") or data.startswith(b"\xd0\xcf\x11\xe0"):
        raise ContactsError(f"{path} is an Excel workbook, not a CSV: save it as CSV (comma delimited) first")
    text, encoding = _decode(data, path)
    if "\x00" in text[:65536]:
        raise ContactsError(f"{path} is not a CSV file (it holds binary data)")
    if not text.strip():
        raise ContactsError(f"{path} is empty")
    if encoding != "utf-8":
        data = text.encode("utf-8")
    if b"\n" not in data and b"\r" in data:
        data = data.replace(b"\r", b"\n")

    first_end = data.find(b"\n")
    header_line = (data if first_end < 0 else data[:first_end]).decode("utf-8").rstrip("\r")
    delimiter = _sniff_delimiter(header_line)
    try:
        header = next(csv.reader([header_line], delimiter=delimiter))
    except csv.Error:
        raise ContactsError(f"{path} is not a CSV file: its first line cannot be read as a header") from None
    headers: dict[str, str] = {}
    for position, name in enumerate(header, start=1):
        key = column_key(name) or f"column_{position}"
        base, suffix = key, 2
        while key in headers:
            key, suffix = f"{base}_{suffix}", suffix + 1
        headers[key] = name.strip()

    malformed_text: list[tuple[str, int]] = []

    def skip_malformed(row: pa_csv.InvalidRow) -> str:
        malformed_text.append((row.text, row.actual_columns))
        return "skip"

    try:
        table = pa_csv.read_csv(
            pa.BufferReader(data),
            read_options=pa_csv.ReadOptions(column_names=list(headers), skip_rows=1, block_size=8 << 20),
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter,
                newlines_in_values=b'"' in data,
                invalid_row_handler=skip_malformed,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(headers, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise ContactsError(f"{path} is not a readable CSV file: {str(exc).splitlines()[0]}") from None
    if table.num_rows == 0 and not malformed_text:
        raise ContactsError(f"{path} has a header but no rows")
    lines, malformed = _line_numbers(data, table, malformed_text, len(headers))
    return ContactFile(path, encoding, delimiter, headers, table, lines, malformed)


def _line_numbers(
    data: bytes, table: pa.Table, malformed_text: list[tuple[str, int]], expected: int
) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Physical line of each parsed row, and (line, raw text, reason) for each row that could not be parsed.

    Without line breaks inside quoted cells, each non-blank line after the header
    is one row, so the numbers are exact; with them, each row is placed after the
    line breaks its predecessors hold.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buffer == 10)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(buffer)]))
    lengths = ends - starts
    carriage = np.zeros(len(starts), dtype=bool)
    has_room = lengths > 0
    carriage[has_room] = buffer[np.minimum(ends[has_room] - 1, len(buffer) - 1)] == 13
    blank = (lengths == 0) | ((lengths == 1) & carriage)
    content = np.flatnonzero(~blank)[1:] + 1  # 1-based lines after the header

    malformed: list[tuple[int, str, str]] = []
    embedded = any(pc.sum(pc.count_substring(col, "\n")).as_py() or 0 for col in table.columns)
    if not embedded:
        position = 0
        taken = np.zeros(len(content), dtype=bool)
        for text, actual in malformed_text:
            found = data.find(b"\n" + text.encode("utf-8"), position)  # a row starts a line
            line = int(np.searchsorted(newlines, found, side="right")) + 1 if found >= 0 else 0
            position = max(position, found + 1)
            slot = np.searchsorted(content, line)
            if slot < len(content) and content[slot] == line:
                taken[slot] = True
            malformed.append((line, text, _malformed_reason(actual, expected)))
        lines = content[~taken]
        if len(lines) == table.num_rows:
            return lines.astype(np.int64), malformed
    breaks = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        breaks += pc.fill_null(pc.count_substring(column, "\n"), 0).to_numpy()
    lines = 2 + np.arange(table.num_rows, dtype=np.int64) + np.concatenate(([0], np.cumsum(breaks)[:-1]))
    if not malformed:
        malformed = [(0, text, _malformed_reason(actual, expected)) for text, actual in malformed_text]
    return lines, malformed


def _malformed_reason(actual: int, expected: int) -> str:
    return f"row has {actual} fields but the header has {expected} (check the delimiter and quotes)"


def address_column(headers: dict[str, str], channel: str, to_column: str | None) -> str:
    """The column holding addresses: the one named with `--to-column`, or the first usual name present."""
    if to_column:
        key = column_key(to_column)
        if key not in headers:
            raise ContactsError(f"no column named {to_column!r}; the columns are: {', '.join(headers.values())}")
        return key
    candidates = EMAIL_COLUMNS if channel == "email" else PHONE_COLUMNS
    for key in candidates:
        if key in headers:
            return key
    kind = "email address" if channel == "email" else "phone number"
    raise ContactsError(
        f"no {kind} column found (looked for {', '.join(candidates[:6])}, ...); "
        f"the columns are: {', '.join(headers.values())}. Name it with --to-column"
    )


@dataclass
class Contacts:
    """All rows of a file with their outcome so far: the planner keeps rejecting rows as it learns more."""

    file: ContactFile
    address_key: str
    raw_addresses: pa.Array
    addresses: pa.Array
    outcome: np.ndarray
    reason: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return self.outcome == OK

    def reject(self, mask: np.ndarray, reason: str | np.ndarray, outcome: int = REJECTED) -> int:
        """Mark rows still OK under `mask` as refused; returns how many changed."""
        mask = mask & self.ok
        self.reason[mask] = reason if isinstance(reason, str) else reason[mask]
        self.outcome[mask] = outcome
        return int(mask.sum())

    def count(self, outcome: int) -> int:
        return int((self.outcome == outcome).sum()) + (len(self.file.malformed) if outcome == REJECTED else 0)

    def rejected_by_reason(self) -> dict[str, int]:
        refused = self.outcome == REJECTED
        counts = pd.Series(self.reason[refused], dtype=object).value_counts()
        result = {str(reason): int(n) for reason, n in counts.items()}
        for _, _, reason in self.file.malformed:
            result[reason] = result.get(reason, 0) + 1
        return dict(sorted(result.items(), key=lambda item: -item[1]))

    def write_rejects(self, path: Path) -> Path:
        """Every row that will not be messaged, in file order: line, the raw address, the reason."""
        refused = np.flatnonzero(~self.ok)
        lines = np.concatenate(([m[0] for m in self.file.malformed], self.file.lines[refused])).astype(np.int64)
        raw = [m[1] for m in self.file.malformed] + self.raw_addresses.take(pa.array(refused)).to_pylist()
        reasons = [m[2] for m in self.file.malformed] + list(self.reason[refused])
        order = np.argsort(lines, kind="stable")
        header = self.file.headers[self.address_key]
        return write_csv(
            path,
            {
                "line": pa.array(lines[order]).cast(pa.string()),
                header: pa.array(raw, pa.string()).take(pa.array(order)),
                "reason": pa.array(reasons, pa.string()).take(pa.array(order)),
            },
        )


def normalize_emails(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Lower-cased, trimmed addresses (null where refused) and the reason for each refused value."""
    values = pc.utf8_trim_whitespace(pc.fill_null(values, ""))
    lowered = pc.utf8_lower(values)
    empty = pc.equal(values, "").to_numpy(zero_copy_only=False)
    valid = pc.match_substring_regex(lowered, _EMAIL).to_numpy(zero_copy_only=False)
    reason = np.full(len(values), None, dtype=object)
    reason[~valid] = INVALID_EMAIL
    reason[empty] = MISSING_EMAIL
    return pc.if_else(pa.array(valid), lowered, pa.scalar(None, pa.string())), reason


def ingest(
    file: ContactFile,
    *,
    channel: str,
    region: str,
    to_column: str | None = None,
    suppressed: pa.Array | None = None,
) -> Contacts:
    """Normalize, de-duplicate and suppress: the contacts a campaign may reach, with every refusal explained."""
    key = address_column(file.headers, channel, to_column)
    raw = file.table.column(key).combine_chunks()
    if channel == "email":
        addresses, reason = normalize_emails(raw)
    else:
        normalized = phones.normalize(raw, region)
        addresses = normalized.e164
        reason = np.array(phones.REASONS, dtype=object)[normalized.reason]
    outcome = np.where(pd.isna(reason), OK, REJECTED).astype(np.int8)
    contacts = Contacts(file, key, raw, addresses, outcome, reason)

    duplicated, first = _duplicates(addresses, contacts.ok)
    if duplicated.any():
        first_line = pa.array(file.lines[first[duplicated]]).cast(pa.string())
        texts = np.full(len(outcome), None, dtype=object)
        texts[duplicated] = pc.binary_join_element_wise("duplicate of line ", first_line, "").to_numpy(
            zero_copy_only=False
        )
        contacts.reject(duplicated, texts, DUPLICATE)
    if suppressed is not None and len(suppressed):
        hit = pc.fill_null(pc.is_in(addresses, value_set=suppressed), False).to_numpy(zero_copy_only=False)
        contacts.reject(hit, SUPPRESSED_REASON, SUPPRESSED)
    return contacts


def _duplicates(addresses: pa.Array, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose address an earlier valid row already has, and for every row the row that has it first.

    Hash-based (Arrow's dictionary encoding), so a million addresses cost one pass, not a sort.
    """
    encoded = pc.dictionary_encode(addresses)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    usable = valid & (codes >= 0)
    rows = np.flatnonzero(usable)[::-1]
    first_of_code = np.full(len(encoded.dictionary) + 1, -1, dtype=np.int64)
    first_of_code[codes[rows]] = rows  # written last to first, so the first row wins
    first = np.where(usable, first_of_code[np.maximum(codes, 0)], np.arange(len(codes)))
    return usable & (first != np.arange(len(codes))), first
