"""Reading a marketer's contact CSV into normalized, de-duplicated, explained rows.

Contact lists come from Excel, Google Sheets and CRMs, so the reader accepts
what those write (UTF-8 with or without BOM, UTF-16, Windows-1252; comma,
semicolon or tab; CRLF; quoted fields; headers in any case) and never guesses
silently: every row that will not be messaged keeps its line number, its raw
address and a reason the person who owns the spreadsheet can act on. Line
numbers are the file's physical lines (the header is line 1), which is also the
spreadsheet's row number for files without line breaks inside quoted cells.

All per-row work is done on whole Arrow columns; `phonenumbers` is only asked
about values the vectorized path does not recognise (see `engine.planning.phones`).
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from engine.csvsafe import write_csv
from engine.errors import CampaignError
from engine.planning import phones
from engine.settings import MAX_FILE_MB


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
    "contact_no",
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
    """The name a header (or a `#var#`) is known by: people write the same column as `Mobile Number`,
    ` MOBILE_NUMBER`, `mobile-number`, `Mobile No.` or `Phone #`, so case, spaces and punctuation are folded."""
    # Letters, digits and combining marks (the vowel signs of Indic scripts) are the name; the rest separates.
    kept = (c if c.isalnum() or unicodedata.category(c).startswith("M") else " " for c in name.lower())
    return "_".join("".join(kept).split())


#: Valid multi-byte characters a UTF-8 file needs per invalid byte sequence to be read as UTF-8 anyway.
#: A Windows-1252 file has almost no valid UTF-8 sequences (its accented letters are single bytes), so
#: a file rich in them with a stray bad byte (a truncated export, one pasted cell) is UTF-8.
UTF8_EVIDENCE = 10


def _decode(data: bytes, path: Path) -> tuple[str, str, int]:
    """Decode the bytes, telling the encodings spreadsheets write apart.

    Returns (text, encoding, invalid byte sequences replaced with U+FFFD).
    """
    if data.startswith(b"\xef\xbb\xbf"):
        text = data[3:].decode("utf-8", errors="replace")
        return text, "utf-8-sig", text.count("\ufffd") - data.count("\ufffd".encode())
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif (head := data[:4096]).count(b"\x00") > len(head) // 4:
        # UTF-16 without a BOM: ASCII text has a zero byte beside every character.
        encoding = "utf-16-le" if head[1:2] == b"\x00" else "utf-16-be"
    else:
        return _decode_8bit(data)
    try:
        return data.decode(encoding), encoding, 0
    except UnicodeDecodeError as exc:
        raise ContactsError(
            f"{path} is not a readable CSV file: it looks like UTF-16 but byte {exc.start:,} is not "
            "(the file may be cut short or binary); export it again"
        ) from None


def _decode_8bit(data: bytes) -> tuple[str, str, int]:
    """UTF-8 when the bytes are UTF-8 (even with a few bad bytes), else Windows-1252, Excel's "CSV"."""
    try:
        return data.decode("utf-8"), "utf-8", 0
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
    # The decoder never swallows an ASCII byte, so every other character came from a multi-byte sequence.
    invalid = text.count("\ufffd") - data.count("\ufffd".encode())
    ascii_bytes = int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) < 0x80))
    multibyte = len(text) - ascii_bytes - invalid
    if multibyte >= UTF8_EVIDENCE * invalid:
        return text, "utf-8", invalid
    return data.decode("cp1252", errors="replace"), "windows-1252", 0


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
    warnings: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return int(self.table.num_rows) + len(self.malformed)


#: The largest file read by default (`CAMPAIGN_MAX_FILE_MB`).
MAX_FILE_BYTES = int(MAX_FILE_MB * 1024 * 1024)


def read_bounded(path: Path, max_bytes: int, setting: str) -> bytes:
    """The file's bytes, or `ContactsError` when it holds more than `max_bytes`: a file by its size, before
    it is read; a device or pipe (`/dev/zero` never ends) by reading at most one byte more than the limit."""
    with path.open("rb") as file:
        info = os.fstat(file.fileno())
        regular = stat.S_ISREG(info.st_mode)
        too_large = regular and info.st_size > max_bytes
        data = b"" if too_large else file.read() if regular else file.read(max_bytes + 1)
    if too_large or len(data) > max_bytes:
        limit = f"{max_bytes / 1024:,.0f} KiB" if max_bytes < 1 << 20 else f"{max_bytes / (1 << 20):,.1f} MiB"
        raise ContactsError(f"{path} is larger than {limit} ({setting}): not read")
    return data


#: More columns than any contact list has; reading such a file would take memory for each (empty) one.
MAX_COLUMNS = 1_000


def _column_keys(header: list[str]) -> tuple[dict[str, str], list[str]]:
    """Each column's key (what a `#placeholder#` names) and its name as written; a name that repeats one
    before it gets a numbered key, and a line saying so, since its placeholder is no longer its name."""
    headers: dict[str, str] = {}
    renamed: list[str] = []
    for position, name in enumerate(header, start=1):
        key = column_key(name) or f"column_{position}"
        base, suffix = key, 2
        while key in headers:
            key, suffix = f"{base}_{suffix}", suffix + 1
        if key != base and name.strip():
            clash = f"column {position} is named {name.strip()!r} like an earlier one"
            renamed.append(f"{clash}: it is #{key}# in a message")
        headers[key] = name.strip()
    return headers, renamed


def read_contacts(path: Path, max_bytes: int = MAX_FILE_BYTES) -> ContactFile:
    """Read and parse a contact CSV; a file that cannot be a contact list raises `ContactsError`."""
    try:
        data = read_bounded(path, max_bytes, "CAMPAIGN_MAX_FILE_MB")
    except FileNotFoundError:
        raise ContactsError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ContactsError(f"{path} is a folder, not a CSV file") from None
    except OSError as exc:
        raise ContactsError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data.startswith(b"PK\x03\x04") or data.startswith(b"\xd0\xcf\x11\xe0"):
        raise ContactsError(f"{path} is an Excel workbook, not a CSV: save it as CSV (comma delimited) first")
    text, encoding, replaced = _decode(data, path)
    if (nul := text.find("\x00")) >= 0:
        line = text.count("\n", 0, nul) + 1
        raise ContactsError(f"{path} is not a CSV file (it holds binary data: a NUL byte on line {line:,})")
    if not text.strip():
        raise ContactsError(f"{path} is empty")
    if encoding != "utf-8" or replaced:
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
    if len(header) > MAX_COLUMNS:
        raise ContactsError(
            f"{path} has {len(header):,} columns in its first line; a contact list has at most {MAX_COLUMNS:,}: "
            "is it the right file?"
        )
    headers, renamed = _column_keys(header)

    malformed_rows = 0

    def skip_malformed(row: pa_csv.InvalidRow) -> str:
        nonlocal malformed_rows
        malformed_rows += 1
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
    if table.num_rows == 0 and not malformed_rows:
        raise ContactsError(f"{path} has a header but no rows")
    # A line break inside quotes ends up in a value unless its row was skipped: without either, every
    # line break ends a record and the quotes need no reading.
    quoted_breaks = b'"' in data and (
        malformed_rows > 0 or any(pc.any(pc.match_substring(column, "\n")).as_py() for column in table.columns)
    )
    placed = None
    scanned = _scan_records(data, delimiter, quoted_breaks, count_fields=malformed_rows > 0)
    if scanned is not None:
        placed = scanned.place(data, table.num_rows, malformed_rows, len(headers))
    if placed is None:
        placed = _read_records(data, delimiter, path).place(data, table.num_rows, malformed_rows, len(headers))
    if placed is None:
        raise ContactsError(f"{path} is not a readable CSV file: its quotes do not pair up (check quoted cells)")
    lines, malformed = placed
    warnings = [f"{path}: {clash}" for clash in renamed]
    if replaced:
        warnings.append(
            f"{path} is UTF-8 apart from {replaced:,} invalid byte sequence{'s' if replaced > 1 else ''}, "
            "shown as \ufffd in the messages and the rejects file: check those rows"
        )
    return ContactFile(path, encoding, delimiter, headers, table, lines, malformed, warnings)


@dataclass
class _Records:
    """The file's records after the header, blank ones left out: byte range, first physical line and,
    when counted, fields."""

    starts: np.ndarray
    ends: np.ndarray
    lines: np.ndarray
    fields: np.ndarray | None

    def place(
        self, data: bytes, rows: int, malformed_rows: int, expected: int
    ) -> tuple[np.ndarray, list[tuple[int, str, str]]] | None:
        """Line of each parsed row, and (line, raw text, reason) of each row with the wrong field count.

        Arrow parsed the same records, keeping those with `expected` fields, in order; None when the
        counts do not agree, since the two readings of the file then differ and no line can be trusted.
        """
        fields = np.full(len(self.lines), expected) if self.fields is None else self.fields
        bad = fields != expected
        if int((~bad).sum()) != rows or int(bad.sum()) != malformed_rows:
            return None
        malformed = [
            (int(line), data[start:end].decode("utf-8").rstrip("\r"), _malformed_reason(int(count), expected))
            for line, start, end, count in zip(
                self.lines[bad], self.starts[bad], self.ends[bad], fields[bad], strict=True
            )
        ]
        return self.lines[~bad].astype(np.int64), malformed


def _scan_records(data: bytes, delimiter: str, quoted_breaks: bool, count_fields: bool) -> _Records | None:
    """Records found over the bytes with numpy: when quotes matter, a line break or delimiter is inside
    quotes when an odd number of quotes precede it.

    That parity is the CSV reading only when every quote opens a field or closes one (a doubled quote
    inside a cell closes and reopens); a quote inside an unquoted cell (`Rahul "Raju" Rao`) is text, so
    such a file returns None and is read by the csv module instead.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    size = len(buffer)
    separator = ord(delimiter)
    newlines = np.flatnonzero(buffer == 10)
    quotes = np.flatnonzero(buffer == 34) if quoted_breaks else np.zeros(0, dtype=np.int64)
    if len(quotes):
        edge = np.zeros(256, dtype=bool)
        edge[[separator, 10, 13, 34]] = True
        opening, closing = quotes[0::2], quotes[1::2]
        if (
            not (edge[buffer[np.maximum(opening - 1, 0)]] | (opening == 0)).all()
            or not (edge[buffer[np.minimum(closing + 1, size - 1)]] | (closing == size - 1)).all()
        ):
            return None
        breaks = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
    else:
        breaks = newlines
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [size]))
    lengths = ends - starts
    blank = (lengths == 0) | ((lengths == 1) & (buffer[np.minimum(starts, size - 1)] == 13))
    kept = np.flatnonzero(~blank)[1:]  # the header is the first record
    # Record i starts on the line after the i-th line break; with no break inside quotes, that is line i + 1.
    lines = kept + 1 if len(breaks) == len(newlines) else np.searchsorted(newlines, starts[kept]) + 1
    fields = None
    if count_fields:
        separators = np.flatnonzero(buffer == separator)
        if len(quotes):
            separators = separators[np.searchsorted(quotes, separators) % 2 == 0]
        per_record = np.bincount(np.searchsorted(ends, separators), minlength=len(starts))
        fields = per_record[kept] + 1
    return _Records(starts[kept], ends[kept], lines, fields)


def _read_records(data: bytes, delimiter: str, path: Path) -> _Records:
    """Records as the csv module reads them (quotes open a cell only at its start, as in Arrow)."""
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter)
    first_lines, last_lines, fields = [], [], []
    previous = 0
    try:
        for record in reader:
            if record:
                first_lines.append(previous + 1)
                last_lines.append(reader.line_num)
                fields.append(len(record))
            previous = reader.line_num
    except csv.Error as exc:
        raise ContactsError(f"{path} is not a readable CSV file: line {reader.line_num}: {exc}") from None
    buffer = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buffer == 10)
    line_starts = np.concatenate(([0], newlines + 1))
    line_ends = np.concatenate((newlines, [len(buffer)]))
    first = np.asarray(first_lines[1:], dtype=np.int64)
    last = np.asarray(last_lines[1:], dtype=np.int64)
    return _Records(line_starts[first - 1], line_ends[last - 1], first, np.asarray(fields[1:], dtype=np.int64))


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
        accepted: np.ndarray = self.outcome == OK
        return accepted

    def reject(self, mask: np.ndarray, reason: str | np.ndarray, outcome: int = REJECTED) -> int:
        """Mark rows still OK under `mask` as refused; returns how many changed."""
        mask = mask & self.ok
        self.reason[mask] = reason if isinstance(reason, str) else reason[mask]
        self.outcome[mask] = outcome
        return int(mask.sum())

    def drop_duplicates(self) -> int:
        """Refuse each row still OK whose address an earlier OK row has; returns how many.

        Run after every other check, so that the first copy that can be sent is the one kept.
        """
        first = _first_rows(self.addresses, self.ok)
        duplicated = first != np.arange(len(first))
        if not duplicated.any():
            return 0
        first_line = pa.array(self.file.lines[first[duplicated]]).cast(pa.string())
        texts = np.full(len(first), None, dtype=object)
        texts[duplicated] = pc.binary_join_element_wise("duplicate of line ", first_line, "").to_numpy(
            zero_copy_only=False
        )
        return self.reject(duplicated, texts, DUPLICATE)

    def suppress(self, suppressed: pa.Array | None) -> int:
        """Refuse each row still OK whose address is on the suppression list; returns how many."""
        if suppressed is None or not len(suppressed):
            return 0
        hit = pc.fill_null(pc.is_in(self.addresses, value_set=suppressed), False).to_numpy(zero_copy_only=False)
        return self.reject(hit, SUPPRESSED_REASON, SUPPRESSED)

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


def read_addresses(file: ContactFile, *, channel: str, region: str, to_column: str | None = None) -> Contacts:
    """Every row with its normalized address, or the reason it has none; duplicates are left to
    `drop_duplicates`, once the caller knows which rows can be messaged at all."""
    key = address_column(file.headers, channel, to_column)
    raw = file.table.column(key).combine_chunks()
    if channel == "email":
        addresses, reason = normalize_emails(raw)
    else:
        normalized = phones.normalize(raw, region)
        addresses = normalized.e164
        reason = np.array(phones.REASONS, dtype=object)[normalized.reason]
    outcome = np.where(pd.isna(reason), OK, REJECTED).astype(np.int8)
    return Contacts(file, key, raw, addresses, outcome, reason)


def ingest(
    file: ContactFile,
    *,
    channel: str,
    region: str,
    to_column: str | None = None,
    suppressed: pa.Array | None = None,
) -> Contacts:
    """Normalize, de-duplicate and suppress: the contacts a campaign may reach, with every refusal explained."""
    contacts = read_addresses(file, channel=channel, region=region, to_column=to_column)
    contacts.drop_duplicates()
    contacts.suppress(suppressed)
    return contacts


def _first_rows(addresses: pa.Array, valid: np.ndarray) -> np.ndarray:
    """For every row, the first valid row with its address (the row itself when it has none or is not valid).

    Hash-based (Arrow's dictionary encoding) to find equal addresses; `np.unique` then
    picks each address's first row, since repeated fancy assignment has no defined winner.
    """
    codes = pc.fill_null(pc.dictionary_encode(addresses).indices, -1).to_numpy(zero_copy_only=False)
    usable = valid & (codes >= 0)
    rows = np.flatnonzero(usable)
    distinct, first_index = np.unique(codes[rows], return_index=True)
    first = np.arange(len(codes), dtype=np.int64)
    first_of_code = np.zeros(int(codes.max(initial=0)) + 1, dtype=np.int64)
    first_of_code[distinct] = rows[first_index]
    first[rows] = first_of_code[codes[rows]]
    return first
