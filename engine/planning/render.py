"""`#var#` personalization and SMS encoding over whole columns.

A template such as `Hi #name#, your code is #code|0000#` is split once into
literal text and placeholders; rendering is then one Arrow string join over the
columns, never a per-row `re.sub`. Text that looks like a placeholder gone wrong
(`{name}`, `# name#`, `#name`) is named, with what was probably meant, before
any row is rendered. The encoding of each rendered message
(GSM-7 or UCS-2) and its segments are computed the same way, with the alphabet
of `engine.gsm`, so the plan counts exactly what the operator will bill.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from engine import gsm
from engine.controls import BIDI_OVERRIDES, MESSAGE_CONTROLS, named
from engine.errors import CampaignError
from engine.planning.contacts import column_key, is_name_char


class TemplateError(CampaignError):
    """The message template cannot be rendered from this file."""


#: Where a placeholder may stand: `#...#` on one line, with an optional `|default`.
_CANDIDATE = re.compile(r"#([^#|\r\n]+)(?:\|([^#\r\n]*))?#")
#: A name as people type one: it starts with a letter and may hold spaces, dots and dashes (`#first name#`,
#: `#Contact No.#`) but neither starts nor ends with a space, so that `#` used as text, as in CSS colours
#: (`border-color:#fff #eee`), is not read as a placeholder `#fff #`. A `#name#` of this shape is always a
#: placeholder; one that names no column is a mistake `check_columns` refuses.
_NAME = re.compile(r"[A-Za-z_](?:[A-Za-z0-9_ .\-]*[A-Za-z0-9_.\-])?")
#: `{name}` and `{{ name }}`, the placeholders of other tools.
_BRACED = re.compile(r"\{\{\s*([^{}\r\n]{1,80}?)\s*\}\}|\{\s*([^{}\r\n]{1,80}?)\s*\}")
#: What a `#` starts in an HTML body that is never a placeholder: a CSS colour (`#fff`, `#1a2b3c`).
_CSS_COLOUR = re.compile(r"#(?:[0-9A-Fa-f]{3,4}|[0-9A-Fa-f]{6}|[0-9A-Fa-f]{8})(?![\w-])")
#: Characters before a `#` in an HTML body that make it part of markup: `&#39;`, `href="#top"`, `page.html#x`.
_MARKUP_BEFORE = frozenset("&\"'/=.")
#: The most words of a column name looked for beside a stray `#`, within this many characters.
_MOST_WORDS = 8
_WINDOW = 120


@dataclass(frozen=True, slots=True)
class Placeholder:
    written: str
    key: str
    default: str | None


@dataclass(frozen=True)
class Template:
    """A message text cut into literal strings and placeholders."""

    text: str
    parts: tuple[str | Placeholder, ...]

    @classmethod
    def parse(cls, text: str, headers: Mapping[str, str] | None = None) -> Template:
        """`text` cut at its placeholders: each `#name#` of the usual shape, and, given the file's `headers`
        (key -> header as written), each `#...#` that is one of them written out, such as `#Amount Due (Rs.)#`.
        Any other `#` is text."""
        as_written = {name.casefold(): key for key, name in (headers or {}).items()}
        parts: list[str | Placeholder] = []
        position = start = 0
        while (match := _CANDIDATE.search(text, start)) is not None:
            name = match.group(1)
            key = column_key(name) if _NAME.fullmatch(name) else as_written.get(name.casefold())
            if key is None:
                start = match.end() - 1  # text; its closing `#` may open a placeholder
                continue
            if match.start() > position:
                parts.append(text[position : match.start()])
            parts.append(Placeholder(match.group(0), key, match.group(2)))
            position = start = match.end()
        if position < len(text):
            parts.append(text[position:])
        return cls(text, tuple(parts))

    @property
    def placeholders(self) -> list[Placeholder]:
        return [p for p in self.parts if isinstance(p, Placeholder)]

    @property
    def literals(self) -> list[str]:
        """The text between the placeholders, as it goes out."""
        return [p for p in self.parts if isinstance(p, str)]

    def check_columns(self, headers: Mapping[str, str], what: str = "message") -> None:
        """A placeholder without a column is a mistake in the template or the file: refuse to plan."""
        missing = [p.written for p in self.placeholders if p.key not in headers]
        if missing:
            raise TemplateError(
                f"the {what} uses {', '.join(missing)} but the file has no such column "
                f"(columns: {', '.join(headers.values())})"
            )

    def lookalikes(self, headers: Mapping[str, str], what: str = "message", html: bool = False) -> list[str]:
        """Text that looks like a placeholder gone wrong, each in a line with what was probably meant:
        `{name}`, `{{name}}`, `# name#`, `#name` or `name#` where `name` is a column of the file. Any other `#`
        (order #123, #hashtags, and in an HTML body CSS colours and markup) is text, and passes without a word."""
        found: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                for shown, key in [*_braced(part, headers), *_stray_hashes(part, headers, html)]:
                    line = f"`{shown}` in the {what} looks like a placeholder: write {_placeholder_for(key, headers)}"
                    found += [] if line in found else [line]
        return found

    def check_characters(self, what: str = "message") -> None:
        """A control code typed into the text itself is refused: it would reach every recipient as bytes their
        phone shows as boxes. (In a file's values they are removed instead, as they are rendered.)"""
        found = re.search(MESSAGE_CONTROLS, self.text)
        if found:
            raise TemplateError(
                f"the {what} holds the control character {named(found.group())} at character {found.start() + 1}; "
                "remove it"
            )

    def skeleton(self, fill: str = "x") -> str:
        """The static text with each placeholder as `fill`, to compare the wording with a registered template.

        A short non-blank stand-in keeps the spaces around a placeholder where a
        registered `{#var#}` expects them.
        """
        return "".join(p if isinstance(p, str) else fill for p in self.parts)

    def render(self, table: pa.Table) -> Rendered:
        """Render every row; rows that cannot be rendered get a reason.

        A value loses its control codes and is trimmed; an empty value takes the
        placeholder's default, and without one the row is refused, since "Hi ,"
        would go to the customer.
        """
        rows = table.num_rows
        reason = np.full(rows, None, dtype=object)
        cleaned = np.zeros(rows, dtype=bool)
        pieces: list[pa.Array | str] = []
        for part in self.parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            values = _without_controls(pc.fill_null(table.column(part.key).combine_chunks(), ""), cleaned)
            values = pc.utf8_trim_whitespace(values)
            empty = pc.equal(values, "")
            if part.default is not None:
                values = pc.if_else(empty, part.default, values)
            else:
                mask = empty.to_numpy(zero_copy_only=False) & pd.isna(reason)
                reason[mask] = f"empty value for {part.written}"
            pieces.append(values)
        return Rendered(pieces, rows, reason, cleaned=cleaned)


def _placeholder_for(key: str, headers: Mapping[str, str]) -> str:
    """How to write the placeholder of column `key`: its header as the file writes it, or its key where the
    header holds a `#` or a `|`."""
    written = headers[key]
    return f"#{written}#" if written and not set(written) & {"#", "|"} else f"#{key}#"


def _braced(text: str, headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """`{name}` and `{{name}}` naming a column: the text as written, and the column's key."""
    found = []
    for match in _BRACED.finditer(text):
        key = column_key(match.group(1) or match.group(2))
        if key in headers:
            found.append((match.group(0), key))
    return found


def _stray_hashes(text: str, headers: Mapping[str, str], html: bool) -> list[tuple[str, str]]:
    """A column's name beside a `#` that is not a placeholder: `#name`, `# name #`, `name#`. Found by the
    words after each `#` (else before it): the longest run of them that is a column's key."""
    found = []
    position = 0
    while (at := text.find("#", position)) >= 0:
        position = at + 1
        before = text[at - 1] if at else " "
        if html and (before in _MARKUP_BEFORE or _CSS_COLOUR.match(text, at)):
            continue
        opens = not is_name_char(before)
        named = _named_after(text, at, headers) if opens else _named_before(text, at, headers)
        if named is not None:
            found.append(named)
            position = at + len(named[0]) if opens else position
    return found


def _named_after(text: str, at: int, headers: Mapping[str, str]) -> tuple[str, str] | None:
    """The text and column of a name right after the `#` at `at` (spaces may come first), through a closing
    `#` that only spaces or punctuation part from the name (`#name #`, `#Amount Due (Rs)#`)."""
    rest = text[at + 1 : at + 1 + _WINDOW].split("\n", 1)[0].split("#", 1)[0]
    words = _words(rest)[:_MOST_WORDS]
    if not words or rest[: words[0][0]].strip(" \t"):
        return None
    match = _longest_key([rest[s:e] for s, e in words], headers)
    if match is None:
        return None
    count, key = match
    end = at + 1 + words[count - 1][1]
    while end < len(text) and text[end] in ".)]":
        end += 1
    closing = text.find("#", end, end + 4)
    if closing >= 0 and not any(is_name_char(c) or c in "\r\n" for c in text[end:closing]):
        end = closing + 1
    return text[at:end], key


def _named_before(text: str, at: int, headers: Mapping[str, str]) -> tuple[str, str] | None:
    """The text and column of a name that ends right at the `#` at `at` (`name#`), when no name follows it."""
    if at + 1 < len(text) and is_name_char(text[at + 1]):
        return None
    line = text[max(0, at - _WINDOW) : at].rsplit("\n", 1)[-1].rsplit("#", 1)[-1]
    words = _words(line)[-_MOST_WORDS:]
    if not words or words[-1][1] != len(line):
        return None
    match = _longest_key([line[s:e] for s, e in words], headers, from_end=True)
    if match is None:
        return None
    count, key = match
    return line[words[-count][0] :] + "#", key


def _words(text: str) -> list[tuple[int, int]]:
    """Where the words of `text` (runs of the characters `column_key` keeps) start and end."""
    spans: list[tuple[int, int]] = []
    begin = None
    for index, char in enumerate(text + " "):
        inside = index < len(text) and is_name_char(char)
        if inside and begin is None:
            begin = index
        elif not inside and begin is not None:
            spans.append((begin, index))
            begin = None
    return spans


def _longest_key(words: list[str], headers: Mapping[str, str], from_end: bool = False) -> tuple[int, str] | None:
    """How many of `words`, from the first (or the last), make the longest column key, and the key."""
    best = None
    for count in range(1, len(words) + 1):
        chosen = words[-count:] if from_end else words[:count]
        key = "_".join(word.lower() for word in chosen)
        if key in headers:
            best = (count, key)
    return best


def _without_controls(values: pa.Array, cleaned: np.ndarray) -> pa.Array:
    """`values` without control codes; the rows that had any are marked in `cleaned`."""
    if not _may_act(values):
        return values
    found = pc.fill_null(pc.match_substring_regex(values, MESSAGE_CONTROLS), False)
    if not pc.any(found).as_py():
        return values
    cleaned |= found.to_numpy(zero_copy_only=False)
    return pc.replace_substring_regex(values, MESSAGE_CONTROLS, "")


@dataclass
class Rendered:
    """Messages kept as their pieces (literal text and column values) as well as joined.

    Encoding and segments add up over pieces, so they are computed on each
    column's distinct values instead of on a million full messages.
    """

    pieces: list[pa.Array | str]
    rows: int
    reason: np.ndarray
    _texts: pa.Array | None = None
    #: The messages whose values had control codes, which rendering removed.
    cleaned: np.ndarray | None = None

    @classmethod
    def of(cls, texts: pa.Array) -> Rendered:
        return cls([texts], len(texts), np.full(len(texts), None, dtype=object))

    @property
    def texts(self) -> pa.Array:
        if self._texts is None:
            arrays = [p if isinstance(p, pa.Array) else pa.scalar(p, pa.string()) for p in self.pieces]
            if any(isinstance(p, pa.Array) for p in self.pieces):
                self._texts = pc.binary_join_element_wise(*arrays, "")
            else:
                self._texts = pa.array(np.full(self.rows, "".join(self.pieces), dtype=object), pa.string())
        return self._texts

    def filter(self, keep: np.ndarray) -> Rendered:
        mask = pa.array(keep)
        pieces = [p.filter(mask) if isinstance(p, pa.Array) else p for p in self.pieces]
        texts = self._texts.filter(mask) if self._texts is not None else None
        return Rendered(pieces, int(keep.sum()), self.reason[keep], texts)

    def replace_lookalikes(self) -> tuple[Rendered, int]:
        """The same messages with typographic look-alikes made GSM-7, and how many messages changed."""
        changed = np.zeros(self.rows, dtype=bool)
        pieces: list[pa.Array | str] = []
        for piece in self.pieces:
            if isinstance(piece, str):
                plain = gsm.replace_lookalikes(piece)
                changed |= plain != piece
                pieces.append(plain)
            else:
                plain, touched = _replace_lookalikes(piece)
                changed |= touched
                pieces.append(plain)
        return Rendered(pieces, self.rows, self.reason), int(changed.sum())

    def with_bidi_overrides(self) -> np.ndarray:
        """Which messages hold a bidirectional override, which can show a text in another order than it is
        read by the phone (`moc.knab` as `bank.com`)."""
        found = np.zeros(self.rows, dtype=bool)
        for piece in self.pieces:
            if isinstance(piece, str):
                found |= re.search(BIDI_OVERRIDES, piece) is not None
            elif _may_act(piece):
                found |= pc.fill_null(pc.match_substring_regex(piece, BIDI_OVERRIDES), False).to_numpy(
                    zero_copy_only=False
                )
        return found


def _may_act(values: pa.Array) -> bool:
    """Whether `values` may hold a control code or a bidirectional override, by their UTF-8 bytes alone: each
    starts with a byte below 0x20 (but tab, LF and CR), DEL, 0xC2 (the C1 controls) or 0xE2 (the overrides). A
    scan of the bytes is many times cheaper than a pattern over a million values, which only a column with
    such a byte needs."""
    data = values.buffers()[2]
    if data is None:
        return False
    raw = np.frombuffer(data, dtype=np.uint8)
    if not raw.size or (raw.min() >= 0x20 and raw.max() < 0x7F):
        return False  # printable ASCII, the common case, in two quick passes
    lowest = (raw < 0x20) & (raw != 0x09) & (raw != 0x0A) & (raw != 0x0D)
    return bool(lowest.any() or np.isin(raw, _ACTING_LEAD_BYTES).any())


_ACTING_LEAD_BYTES = np.array([0x7F, 0xC2, 0xE2], dtype=np.uint8)


def _char_class(chars: str) -> str:
    return "".join(f"\\x{{{ord(c):04X}}}" for c in chars)


_GSM7 = _char_class(gsm.GSM7_BASIC.replace("\x1b", "") + gsm.GSM7_EXTENDED)
_NOT_GSM7 = f"[^{_GSM7}]"
_EXTENDED = f"[{_char_class(gsm.GSM7_EXTENDED)}]"
_ASTRAL = r"[\x{10000}-\x{10FFFF}]"


def _replace_lookalikes(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    trigger = "[" + _char_class("".join(gsm.LOOKALIKES)) + "]"
    touched = pc.match_substring_regex(texts, trigger).to_numpy(zero_copy_only=False)
    if not touched.any():
        return texts, touched
    for char, plain in gsm.LOOKALIKES.items():
        if pc.any(pc.match_substring(texts, char)).as_py():
            texts = pc.replace_substring(texts, char, plain)
    return texts, touched


@dataclass
class Encoded:
    """Per message: UCS-2 or not, and segments; with why UCS-2 was needed."""

    ucs2: np.ndarray
    segments: np.ndarray
    because_of: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, object]]:
        ucs2 = int(self.ucs2.sum())
        result: dict[str, dict[str, object]] = {}
        if len(self.ucs2) - ucs2:
            result["gsm7"] = {"messages": len(self.ucs2) - ucs2}
        if ucs2:
            result["ucs2"] = {"messages": ucs2, "because_of": self.because_of}
        return result


def encode(messages: Rendered | pa.Array) -> Encoded:
    """GSM-7 when every character has a GSM-7 code (extension characters count twice), else UCS-2."""
    if not isinstance(messages, Rendered):
        messages = Rendered.of(messages)
    rows = messages.rows
    ucs2 = np.zeros(rows, dtype=bool)
    chars = np.zeros(rows, dtype=np.int64)
    septets = np.zeros(rows, dtype=np.int64)
    code_units = np.zeros(rows, dtype=np.int64)
    first_wide = np.full(rows, None, dtype=object)
    for piece in messages.pieces:
        if isinstance(piece, str):
            wide = not gsm.is_gsm7(piece)
            ucs2 |= wide
            chars += len(piece)
            septets += len(piece) if wide else gsm.length_in_units(piece, "gsm7")
            code_units += gsm.length_in_units(piece, "ucs2")
            if wide:
                first_wide[pd.isna(first_wide)] = gsm.first_non_gsm7(piece)
            continue
        wide_rows, piece_chars, piece_septets, piece_units, piece_first = _measure_distinct(piece)
        ucs2 |= wide_rows
        chars += piece_chars
        septets += piece_septets
        code_units += piece_units
        if wide_rows.any():
            unset = pd.isna(first_wide) & wide_rows
            first_wide[unset] = piece_first[unset]
    units = np.where(ucs2, code_units, septets)
    single = np.where(ucs2, gsm.SINGLE["ucs2"], gsm.SINGLE["gsm7"])
    multi = np.where(ucs2, gsm.MULTI["ucs2"], gsm.MULTI["gsm7"])
    segments = np.where(units <= single, 1, -(-units // multi)).astype(np.int64)
    # A two-unit character (GSM-7 escape pair, UTF-16 surrogate pair) is never split between
    # parts, so a long message holding one may need a part more: those few are counted exactly.
    uneven = np.flatnonzero((units > single) & (units != chars))
    if len(uneven):
        segments[uneven] = _packed_segments(messages.texts.take(pa.array(uneven)).to_pylist(), ucs2[uneven])
    because_of: dict[str, int] = {}
    if ucs2.any():
        counts = pd.Series(first_wide[ucs2], dtype=object).value_counts()
        because_of = {str(char): int(n) for char, n in counts.head(5).items()}
    return Encoded(ucs2, segments, because_of)


#: By code point: is it a GSM-7 extension character (two septets)?
_EXTENDED_TABLE = np.zeros(0x110000, dtype=bool)
_EXTENDED_TABLE[[ord(c) for c in gsm.GSM7_EXTENDED]] = True


#: Messages longer than this are counted one at a time (a binary search per part) rather than in a matrix
#: as wide as the longest of their chunk, whose cost grows with (count x longest x parts).
LONG_TEXT = 2_000


def _packed_segments(texts: list[str], ucs2: np.ndarray, chunk: int = 20_000) -> np.ndarray:
    """Parts of long messages when a two-unit character may not straddle two parts, as `gsm.segments`
    counts them. Messages of similar length are counted together (sorted by length, so no chunk is wider
    than its own longest), the longest one at a time."""
    result = np.empty(len(texts), dtype=np.int64)
    lengths = np.fromiter((len(text) for text in texts), dtype=np.int64, count=len(texts))
    order = np.argsort(lengths, kind="stable")
    long_ones = lengths[order] > LONG_TEXT
    for index in order[long_ones]:
        result[index] = _parts_of(texts[index], bool(ucs2[index]))
    short = order[~long_ones]
    for start in range(0, len(short), chunk):
        rows = short[start : start + chunk]
        result[rows] = _parts_together([texts[i] for i in rows], ucs2[rows])
    return result


def _parts_of(text: str, wide: bool) -> int:
    """Parts of one message: each part ends before the first character whose running width passes its room."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    running = np.cumsum(1 + (codes > 0xFFFF if wide else _EXTENDED_TABLE[codes]))
    room = gsm.MULTI["ucs2"] if wide else gsm.MULTI["gsm7"]
    parts, used = 1, 0
    while running[-1] - used > room:
        used = int(running[np.searchsorted(running, used + room, side="right") - 1])
        parts += 1
    return parts


def _parts_together(batch: list[str], wide: np.ndarray) -> np.ndarray:
    """`_parts_of` for messages of similar length at once, one part per step."""
    codes = np.array(batch, dtype=str).view(np.uint32).reshape(len(batch), -1)
    lengths = np.array([len(text) for text in batch])
    double = np.where(wide[:, None], codes > 0xFFFF, _EXTENDED_TABLE[codes])
    width = np.where(np.arange(codes.shape[1]) < lengths[:, None], 1 + double, 0)
    running = np.cumsum(width, axis=1)
    total = running[:, -1]
    room = np.where(wide, gsm.MULTI["ucs2"], gsm.MULTI["gsm7"])
    parts, used = np.ones(len(batch), dtype=np.int64), np.zeros(len(batch), dtype=np.int64)
    while (spilling := total - used > room).any():
        first_out = (running > (used + room)[:, None]).argmax(axis=1)
        part_end = np.take_along_axis(running, (first_out - 1)[:, None], axis=1)[:, 0]
        used = np.where(spilling, part_end, used)
        parts += spilling
    return parts


def _measure_distinct(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per value: UCS-2 needed, characters, GSM-7 septets, UTF-16 units, first non-GSM-7 character;
    each distinct value is measured once."""
    encoded = pc.dictionary_encode(values)
    distinct = encoded.dictionary
    index = encoded.indices.to_numpy(zero_copy_only=False)
    length = pc.utf8_length(distinct).to_numpy(zero_copy_only=False).astype(np.int64)
    wide = pc.match_substring_regex(distinct, _NOT_GSM7).to_numpy(zero_copy_only=False)
    septets = length + pc.count_substring_regex(distinct, _EXTENDED).to_numpy(zero_copy_only=False)
    units = length + pc.count_substring_regex(distinct, _ASTRAL).to_numpy(zero_copy_only=False)
    first = np.full(len(distinct), None, dtype=object)
    if wide.any():
        found = pc.struct_field(pc.extract_regex(distinct, f"(?P<c>{_NOT_GSM7})"), [0])
        first = found.to_numpy(zero_copy_only=False)
    return wide[index], length[index], septets[index], units[index], first[index]
