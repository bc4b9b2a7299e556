"""Reading a marketer's contact CSV into normalized, de-duplicated, explained rows.

Contact lists come from Excel, Google Sheets and CRMs, so the reader accepts
what those write (UTF-8 with or without BOM, UTF-16, Windows-1252; comma,
semicolon or tab; CRLF, LF or Excel for Mac's lone CR; quoted fields; headers in
any case) and never guesses silently: every row that will not be messaged keeps
its line number, its raw address and a reason the person who owns the
spreadsheet can act on. Line numbers are the lines a text editor shows: the
header is line 1, and a line ends at LF, CRLF or a CR not followed by LF, in the
row splitting and the numbering alike. That is also the spreadsheet's row number
for files without line breaks inside quoted cells.

A quoted value may run across at most `MAX_QUOTED_LINES` lines and must close
where the value ends. A quote that does not (a stray `"` at the start of a cell)
would run the rest of the file into one value, so instead only the line it opens
on is rejected, as an unclosed quote, and reading starts again on the next line;
a warning names those lines. A cell longer than `MAX_CELL_CHARS` characters
refuses the file, naming its line and column.

All per-row work is done on whole Arrow columns; `phonenumbers` is only asked
about values the vectorized path does not recognise (see `engine.planning.phones`).
Only a file whose reading is in doubt is read again record by record.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
import sys
import unicodedata
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from engine.csvsafe import Target, write_csv
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
    kept = (c if is_name_char(c) else " " for c in name.lower())
    return "_".join("".join(kept).split())


def is_name_char(char: str) -> bool:
    """Letters, digits and combining marks (the vowel signs of Indic scripts) are a column's name; the rest
    separates its words."""
    return char.isalnum() or unicodedata.category(char).startswith("M")


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


#: The longest value a cell may hold, in characters. A contact's name, number, city or note is far shorter; a
#: longer cell is a paste gone wrong, and each copy of it (the row, its message) would cost that much memory.
MAX_CELL_CHARS = 1_000_000
#: The most lines a quoted value may run across (a multi-line address or note); a quote still open after that many
#: is taken as never closed.
MAX_QUOTED_LINES = 20
#: The bytes Arrow reads at a time; a record must fit in one, so a file with longer records is read with larger ones.
BLOCK_BYTES = 8 << 20
UNCLOSED_QUOTE = 'unclosed quote: a value on this line starts with " and is not closed where it ends (fix the quotes)'


_VISIBLE_BYTE = re.compile(rb"\S")


def read_contacts(path: Path, max_bytes: int = MAX_FILE_BYTES) -> ContactFile:
    """Read and parse a contact CSV; a file that cannot be a contact list raises `ContactsError`."""
    data, encoding, replaced = _load(path, max_bytes)
    breaks = _line_breaks(data)
    delimiter, header = _header(data, breaks, path)
    headers, renamed = _column_keys(header)
    if not len(breaks) or not _VISIBLE_BYTE.search(data, int(breaks[0]) + 1):
        raise ContactsError(f"{path} has a header but no rows")
    parsed = _parse(data, breaks, delimiter, headers, path)
    if parsed.table.num_rows == 0 and not parsed.malformed:
        raise ContactsError(f"{path} has a header but no rows")
    warnings = [f"{path}: {clash}" for clash in renamed]
    if replaced:
        warnings.append(
            f"{path} is UTF-8 apart from {replaced:,} invalid byte sequence{'s' if replaced > 1 else ''}, "
            "shown as \ufffd in the messages and the rejects file: check those rows"
        )
    if parsed.unclosed:
        warnings.append(_unclosed_warning(path, parsed.unclosed))
    return ContactFile(path, encoding, delimiter, headers, parsed.table, parsed.lines, parsed.malformed, warnings)


def _load(path: Path, max_bytes: int) -> tuple[bytes, str, int]:
    """The file as UTF-8 bytes, the encoding it was written in, and how many invalid byte sequences were replaced;
    a file that is missing, too large, a workbook, binary or empty raises `ContactsError`."""
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
        raise ContactsError(
            f"{path} is not a CSV file (it holds binary data: a NUL byte on line {_line_of(text, nul):,})"
        )
    if not text.strip():
        raise ContactsError(f"{path} is empty")
    if encoding != "utf-8" or replaced:
        data = text.encode("utf-8")
    return data, encoding, replaced


def _line_of(text: str, offset: int) -> int:
    """The line `text[offset]` is on, counting LF, CRLF and a lone CR as one line end each."""
    return text.count("\n", 0, offset) + text.count("\r", 0, offset) - text.count("\r\n", 0, offset) + 1


def _line_breaks(data: bytes) -> np.ndarray:
    """Where each line ends: the offset of its LF, or of a CR not followed by LF (what Excel for Mac and old Mac
    files end lines with, and what Arrow and text editors take as a line end too)."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buffer == 10)
    if b"\r" not in data or data.count(b"\r") == data.count(b"\r\n"):
        return newlines
    returns = np.flatnonzero(buffer == 13)
    lone = returns[buffer[np.minimum(returns + 1, len(buffer) - 1)] != 10]  # a CR that ends the file is lone too
    return np.union1d(newlines, lone)


def _header(data: bytes, breaks: np.ndarray, path: Path) -> tuple[str, list[str]]:
    """The delimiter and the column names, from the first line."""
    line = data[: int(breaks[0]) if len(breaks) else len(data)].decode("utf-8").rstrip("\r")
    delimiter = _sniff_delimiter(line)
    try:
        header = next(csv.reader([line], delimiter=delimiter))
    except csv.Error:
        raise ContactsError(f"{path} is not a CSV file: its first line cannot be read as a header") from None
    if len(header) > MAX_COLUMNS:
        raise ContactsError(
            f"{path} has {len(header):,} columns in its first line; a contact list has at most {MAX_COLUMNS:,}: "
            "is it the right file?"
        )
    return delimiter, header


@dataclass
class _Parsed:
    """Arrow's table of the rows, each row's line, the rows refused as unreadable, and the lines left out
    for an unclosed quote."""

    table: pa.Table
    lines: np.ndarray
    malformed: list[tuple[int, str, str]]
    unclosed: list[int] = field(default_factory=list)


def _parse(data: bytes, breaks: np.ndarray, delimiter: str, headers: dict[str, str], path: Path) -> _Parsed:
    """Arrow reads the rows and a numpy scan of the bytes finds their lines. A file that reading is in doubt for
    (a quote that may not close, a line or record longer than a cell may be, records Arrow cannot split) is read
    record by record instead, which recovers at the line after a broken one."""
    read = None
    if _longest_line(breaks, len(data)) <= MAX_CELL_CHARS:
        read = _arrow(data, delimiter, headers, BLOCK_BYTES)
        parsed = None if read is None else _place(data, breaks, delimiter, len(headers), *read)
        if parsed is not None:
            return parsed
    return _parse_recovering(data, breaks, delimiter, headers, path, read)


def _longest_line(breaks: np.ndarray, size: int) -> int:
    """The bytes of the longest line, its line end included."""
    bounds = np.concatenate(([-1], breaks, [size]))
    return int(np.diff(bounds).max())


def _arrow(data: bytes, delimiter: str, headers: dict[str, str], block_size: int) -> tuple[pa.Table, int] | None:
    """The rows with the header's number of fields, every column as text, and how many rows had another number;
    None when Arrow cannot read the file (a record longer than its block)."""
    malformed_rows = 0

    def skip_malformed(row: pa_csv.InvalidRow) -> str:
        nonlocal malformed_rows
        malformed_rows += 1
        return "skip"

    try:
        table = pa_csv.read_csv(
            pa.BufferReader(data),
            read_options=pa_csv.ReadOptions(column_names=list(headers), skip_rows=1, block_size=block_size),
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
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    return table, malformed_rows


def _place(
    data: bytes, breaks: np.ndarray, delimiter: str, expected: int, table: pa.Table, malformed_rows: int
) -> _Parsed | None:
    """Each row's line, from a scan that agrees with Arrow's reading; None when the scan cannot vouch for it."""
    # A line break inside quotes ends up in a value unless its row was skipped: without either, every
    # line break ends a record and the quotes need no reading.
    lone_returns = b"\r" in data and len(breaks) > data.count(b"\n")
    quoted_breaks = b'"' in data and (malformed_rows > 0 or _breaks_in_values(table, lone_returns))
    scanned = _scan_records(data, breaks, delimiter, quoted_breaks, count_fields=malformed_rows > 0)
    if scanned is None or not scanned.plain():
        return None
    placed = scanned.place(data, table.num_rows, malformed_rows, expected)
    return None if placed is None else _Parsed(table, *placed)


def _breaks_in_values(table: pa.Table, lone_returns: bool) -> bool:
    """Whether a value holds a line end (a lone CR counts only where the file has one)."""
    for column in table.columns:
        found = pc.match_substring_regex(column, "[\r\n]") if lone_returns else pc.match_substring(column, "\n")
        if pc.any(found).as_py():
            return True
    return False


def _parse_recovering(
    data: bytes,
    breaks: np.ndarray,
    delimiter: str,
    headers: dict[str, str],
    path: Path,
    read: tuple[pa.Table, int] | None,
) -> _Parsed:
    """Record by record (`_split_records`), then Arrow on the file without the lines whose quote does not close,
    in blocks that fit its longest record (Arrow's first reading, `read`, stands when no line was left out)."""
    records, left_out = _split_records(data, breaks, delimiter, headers, path)
    unclosed = [line for line, _ in left_out]
    if unclosed or read is None:
        longest = int((records.ends - records.starts).max(initial=0))
        read = _arrow(_without_lines(data, breaks, unclosed), delimiter, headers, max(BLOCK_BYTES, 2 * longest))
    placed = None if read is None else records.place(data, read[0].num_rows, read[1], len(headers))
    if read is None or placed is None:
        raise ContactsError(f"{path} is not a readable CSV file: its quotes do not pair up (check quoted cells)")
    lines, malformed = placed
    malformed += [(line, raw, UNCLOSED_QUOTE) for line, raw in left_out]
    malformed.sort(key=lambda row: row[0])
    return _Parsed(read[0], lines, malformed, unclosed)


@dataclass
class _Records:
    """The file's records after the header, blank ones left out: byte range, first and last physical line and,
    when counted, fields."""

    starts: np.ndarray
    ends: np.ndarray
    lines: np.ndarray
    lasts: np.ndarray
    fields: np.ndarray | None

    def plain(self) -> bool:
        """Whether Arrow's reading of these records can stand: none is longer than a cell may be or runs across
        more than `MAX_QUOTED_LINES` lines (the scan has already seen each quote close where a value ends)."""
        longest = int((self.ends - self.starts).max(initial=0))
        return longest <= MAX_CELL_CHARS and int((self.lasts - self.lines).max(initial=0)) < MAX_QUOTED_LINES

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


def _scan_records(
    data: bytes, line_breaks: np.ndarray, delimiter: str, quoted_breaks: bool, count_fields: bool
) -> _Records | None:
    """Records found over the bytes with numpy: when quotes matter, a line break or delimiter is inside
    quotes when an odd number of quotes precede it.

    That parity is the CSV reading only when every quote opens a field or closes one (a doubled quote
    inside a cell closes and reopens) and the last one closes; a quote inside an unquoted cell (`Rahul "Raju"
    Rao`) is text, and an unpaired one may not close at all, so such a file returns None and is read record by
    record instead.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    size = len(buffer)
    separator = ord(delimiter)
    quotes = np.flatnonzero(buffer == 34) if quoted_breaks else np.zeros(0, dtype=np.int64)
    if len(quotes):
        edge = np.zeros(256, dtype=bool)
        edge[[separator, 10, 13, 34]] = True
        opening, closing = quotes[0::2], quotes[1::2]
        if (
            len(quotes) % 2
            or not (edge[buffer[np.maximum(opening - 1, 0)]] | (opening == 0)).all()
            or not (edge[buffer[np.minimum(closing + 1, size - 1)]] | (closing == size - 1)).all()
        ):
            return None
        breaks = line_breaks[np.searchsorted(quotes, line_breaks) % 2 == 0]
    else:
        breaks = line_breaks
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [size]))
    lengths = ends - starts
    blank = (lengths == 0) | ((lengths == 1) & (buffer[np.minimum(starts, size - 1)] == 13))
    kept = np.flatnonzero(~blank)[1:]  # the header is the first record
    if len(breaks) == len(line_breaks):
        # Record i starts on the line after the i-th line break, and no record runs across lines.
        lines = lasts = kept + 1
    else:
        lines = np.searchsorted(line_breaks, starts[kept]) + 1
        lasts = np.searchsorted(line_breaks, ends[kept]) + 1
    fields = None
    if count_fields:
        separators = np.flatnonzero(buffer == separator)
        if len(quotes):
            separators = separators[np.searchsorted(quotes, separators) % 2 == 0]
        per_record = np.bincount(np.searchsorted(ends, separators), minlength=len(starts))
        fields = per_record[kept] + 1
    return _Records(starts[kept], ends[kept], lines, lasts, fields)


class _Lines:
    """The file's physical lines: where each starts and ends, to read the file again from any of them."""

    def __init__(self, data: bytes, breaks: np.ndarray) -> None:
        self.data = data
        self.starts = np.concatenate(([0], breaks + 1))
        self.ends = np.concatenate((breaks, [len(data)]))
        # A line break at the very end ends the last line rather than opening an empty one.
        self.total = len(self.starts) - int(len(breaks) > 0 and int(breaks[-1]) == len(data) - 1)
        self.long = set(np.flatnonzero(self.ends - self.starts > MAX_CELL_CHARS).tolist())

    def text(self, first: int, end: int) -> str:
        """Lines `first` to `end` (excluded, counted from 0) as written, line breaks included."""
        stop = int(self.starts[end]) if end < len(self.starts) else len(self.data)
        return self.data[int(self.starts[first]) : stop].decode("utf-8")


@dataclass
class _Split:
    """What `_split_records` found: (first line, last line, fields) of each record, one after the other, and
    (line, text) of each line left out as unclosed."""

    found: array[int] = field(default_factory=lambda: array("q"))
    unclosed: list[tuple[int, str]] = field(default_factory=list)

    def records(self, lines: _Lines) -> _Records:
        firsts, lasts, fields = np.frombuffer(self.found, dtype=np.int64).reshape(-1, 3).T
        return _Records(lines.starts[firsts - 1], lines.ends[lasts - 1], firsts, lasts, fields)


def _split_records(
    data: bytes, breaks: np.ndarray, delimiter: str, headers: dict[str, str], path: Path
) -> tuple[_Records, list[tuple[int, str]]]:
    """The records after the header as the csv module reads them (a quote opens a value only at its start, as in
    Arrow), and (line, text) of each line left out for an unclosed quote.

    A record whose quote runs across more than `MAX_QUOTED_LINES` lines, is still open at the end of the file,
    or closes where no value ends is not taken: its first line is set aside and reading starts again on the next
    line, so a stray quote costs one line, not the rest of the file. A value longer than `MAX_CELL_CHARS`
    refuses the file.
    """
    lines, split = _Lines(data, breaks), _Split()
    # The stream splits lines where `_line_breaks` does (LF, CRLF, lone CR) and can start again at any line.
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")
    limit = csv.field_size_limit(sys.maxsize)  # values are measured against MAX_CELL_CHARS instead
    try:
        start = 1  # line 0 is the header
        while start < lines.total:
            stream.seek(int(lines.starts[start]))
            start = _read_from(stream, start, lines, split, delimiter, headers, path)
    except csv.Error as exc:  # only the field size limit, should another reader in this process have reset it
        raise ContactsError(f"{path} is not a readable CSV file: {exc}") from None
    finally:
        csv.field_size_limit(limit)
    return split.records(lines), split.unclosed


def _read_from(
    stream: io.TextIOWrapper,
    base: int,
    lines: _Lines,
    split: _Split,
    delimiter: str,
    headers: dict[str, str],
    path: Path,
) -> int:
    """Add the records from line `base` on to `split`, up to the first unclosed one: the line to go on from."""
    reader = csv.reader(stream, delimiter=delimiter)
    found = split.found.extend
    start = base
    for record in reader:
        end = base + reader.line_num
        across = end - start > 1
        if (across or end == lines.total) and not _closed(lines, start, end, delimiter):
            split.unclosed.append((start + 1, lines.text(start, start + 1).rstrip("\r\n")))
            return start + 1
        if across or start in lines.long:
            _check_cells(record, start + 1, headers, path)
        if record:
            found((start + 1, end, len(record)))
        start = end
    return lines.total


def _closed(lines: _Lines, start: int, end: int, delimiter: str) -> bool:
    """Whether the record on lines `start` to `end` (excluded) closes each quote where its value ends: within
    `MAX_QUOTED_LINES` lines, before the end of the file, and before a delimiter or a line end (a stray quote is
    closed, if at all, by some later cell's opening quote)."""
    if end - start > MAX_QUOTED_LINES:
        return False
    text = lines.text(start, end)
    if end - start == 1:
        # One line can only have run on at the end of the file: a line after it would then join its record.
        return len(list(csv.reader(io.StringIO(text + "\nx", newline=""), delimiter=delimiter))) > 1
    try:
        for _ in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error:
        return False
    return True


def _check_cells(record: list[str], line: int, headers: dict[str, str], path: Path) -> None:
    """Refuse the file at a value longer than a cell may be, naming its line and column."""
    longest = max(map(len, record))
    if longest <= MAX_CELL_CHARS:
        return
    column = [len(value) for value in record].index(longest)
    names = list(headers.values())
    name = names[column] if column < len(names) and names[column] else f"column {column + 1}"
    raise ContactsError(
        f'{path}: line {line:,}, column "{name}" holds a value of {longest:,} characters; the longest a cell may be '
        f"is {MAX_CELL_CHARS:,}. Shorten or empty that cell"
    )


def _without_lines(data: bytes, breaks: np.ndarray, lines: list[int]) -> bytes:
    """The file with each of these lines emptied (its line end kept), so that Arrow reads the records found."""
    if not lines:
        return data
    pieces, kept_from = [], 0
    for line in lines:
        start = int(breaks[line - 2]) + 1 if line > 1 else 0
        end = int(breaks[line - 1]) + 1 if line <= len(breaks) else len(data)
        pieces += [data[kept_from:start], b"\n"]
        kept_from = end
    pieces.append(data[kept_from:])
    return b"".join(pieces)


def _unclosed_warning(path: Path, lines: list[int]) -> str:
    """One line saying which lines were left out for an unclosed quote, and what became of the rest."""
    listed = [str(line) for line in lines[:5]] + ([f"{len(lines) - 5:,} more"] if len(lines) > 5 else [])
    shown = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
    one = len(lines) == 1
    return (
        f"{path}: {'line' if one else 'lines'} {shown} {'has an unclosed quote' if one else 'have unclosed quotes'}: "
        'a value starts with " and is not closed where it ends, so as written it runs on into the lines after it. '
        f"Only {'that line was' if one else 'those lines were'} left out (see the rejects file) and the rest was read "
        f"as usual; a quoted value may run across at most {MAX_QUOTED_LINES} lines"
    )


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

    def write_rejects(self, path: Path | Target) -> Path:
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
