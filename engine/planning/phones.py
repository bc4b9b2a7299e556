"""Phone numbers to E.164, vectorized, with the same answers as `phonenumbers`.

`phonenumbers` costs about 30 µs a number, which is most of the time of
planning a large campaign. Nearly every row of an Indian contact list is a
mobile written in one of a few ways (`98765 43210`, `098765-43210`,
`+91 98765 43210`, `919876543210`), so those forms are recognised with one
regular expression over the whole column and classified with the very
patterns `phonenumbers` itself uses (its metadata for region IN, landlines and
service numbers included), applied by Arrow's regex engine. Every other value goes through `phonenumbers` unchanged,
once per distinct value, so both paths agree; `tests/test_contacts_phones.py`
holds the fast path to that promise on a varied sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import PhoneMetadata, PhoneNumberDesc, PhoneNumberType

#: Separators people type inside numbers, and the apostrophe Excel puts before a number kept as
#: text; `phonenumbers` ignores all of them.
_SEPARATORS = r"^'|[ \t\x{00A0}\-.()/]"
#: Indian numbers in their usual national and international forms (after separators are removed).
#: For region IN, phonenumbers reads each prefix here the same way for every ten-digit national
#: number not starting with 0: `+91`/`0091` as the country code, `91` as the country code
#: (twelve digits are too long to be national), `0` as the trunk prefix. Other regions dial
#: abroad differently (`011` from the US), so there only `+91` is certain.
_INDIAN_NATIONAL = r"^(?:\+91|0091|91|0)?(?P<n>[1-9][0-9]{9})$"
_INDIAN_INTERNATIONAL = r"^\+91(?P<n>[1-9][0-9]{9})$"
#: What Excel writes for a long number in a General cell: 9.19877E+11, 9,19877E+11.
_SCIENTIFIC = r"^\s*[0-9]+(?:[.,][0-9]+)?[eE]\+?[0-9]+\s*$"

#: A number a spreadsheet or pandas exported as a float: 919876543210.0.
_DECIMAL = r"^[0-9]+\.0+$"

#: Reasons given for rejected numbers, worded for the person who fixes the spreadsheet.
MISSING = "no phone number"
SCIENTIFIC = (
    "number was turned into scientific notation by Excel (e.g. 9.19E+11); format the column as Text and export again"
)
INVALID = "not a valid phone number"
NOT_MOBILE = "not a mobile number (landlines and service numbers cannot receive SMS)"
#: No phone number, however written, is longer than this (phonenumbers refuses 250; E.164 has at most 15
#: digits, and a generous spelling with spaces, a prefix and an extension stays far below 64).
MAX_LENGTH = 64
TOO_LONG = f"longer than any phone number (over {MAX_LENGTH} characters)"

_MOBILE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


#: Reason codes: `Normalized.reason` holds an index into this tuple (0: accepted).
REASONS: tuple[str | None, ...] = (None, MISSING, SCIENTIFIC, INVALID, NOT_MOBILE, TOO_LONG)
OK, R_MISSING, R_SCIENTIFIC, R_INVALID, R_NOT_MOBILE, R_TOO_LONG = range(len(REASONS))


@dataclass(frozen=True, slots=True)
class Normalized:
    """E.164 numbers (null where refused) and a reason code per value (index into `REASONS`, 0 = accepted)."""

    e164: pa.Array
    reason: np.ndarray


def _anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


class _IndianPatterns:
    """phonenumbers' own IN metadata for ten-digit national numbers, in the order it types a number:
    the general pattern, then the service types (toll free, UAN...), then fixed line and mobile."""

    def __init__(self) -> None:
        metadata = PhoneMetadata.metadata_for_region("IN")
        if metadata is None:  # phonenumbers ships it: missing only from a broken install
            raise RuntimeError("phonenumbers has no metadata for India (IN)")
        self.general = self._pattern(metadata.general_desc)
        services = (
            metadata.premium_rate,
            metadata.toll_free,
            metadata.shared_cost,
            metadata.voip,
            metadata.personal_number,
            metadata.pager,
            metadata.uan,
            metadata.voicemail,
        )
        self.services = [p for p in map(self._pattern, services) if p]
        self.fixed = self._pattern(metadata.fixed_line)
        self.mobile = self._pattern(metadata.mobile)

    @staticmethod
    def _pattern(desc: PhoneNumberDesc | None) -> str | None:
        """The anchored pattern of a description that can hold ten digits, else None."""
        if desc is None or not desc.national_number_pattern:
            return None
        if desc.possible_length and 10 not in desc.possible_length:
            return None
        return _anchored(desc.national_number_pattern)


_IN = _IndianPatterns()


def normalize_one(raw: str, region: str) -> tuple[str | None, int]:
    """The reference path: `phonenumbers` for one value; returns (e164, reason code)."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None, R_INVALID
    if not phonenumbers.is_valid_number(number):
        return None, R_INVALID
    if phonenumbers.number_type(number) not in _MOBILE_TYPES:
        return None, R_NOT_MOBILE
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), OK


def _mask(array: pa.Array) -> np.ndarray:
    mask: np.ndarray = pc.fill_null(array, False).to_numpy(zero_copy_only=False)
    return mask


def normalize(values: pa.Array, region: str = "IN") -> Normalized:
    """Normalize a column of raw strings (nulls allowed) to E.164 mobiles, aligned with `values`."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    values = pc.utf8_trim_whitespace(pc.fill_null(values.cast(pa.string()), ""))
    decimal = pc.match_substring_regex(values, _DECIMAL)
    if pc.any(decimal).as_py():
        values = pc.if_else(decimal, pc.replace_substring_regex(values, r"\.0+$", ""), values)
    empty = _mask(pc.equal(values, ""))
    scientific = _mask(pc.match_substring_regex(values, _SCIENTIFIC))
    # Most files write numbers one way; only values holding a separator pay for removing it.
    spaced = pc.match_substring_regex(values, _SEPARATORS)
    compact = values
    if pc.any(spaced).as_py():
        compact = pc.if_else(spaced, pc.replace_substring_regex(values, _SEPARATORS, ""), values)
    fast_form = _INDIAN_NATIONAL if region.upper() == "IN" else _INDIAN_INTERNATIONAL
    national = pc.struct_field(pc.extract_regex(compact, fast_form), [0])
    fast = _mask(pc.is_valid(national))
    reason = np.full(len(values), R_INVALID, dtype=np.int8)
    reason[fast] = _classify(national.filter(pa.array(fast)))
    reason[scientific] = R_SCIENTIFIC
    reason[empty] = R_MISSING
    e164 = pc.binary_join_element_wise("+91", national, "")

    too_long = _mask(pc.greater(pc.utf8_length(values), MAX_LENGTH))
    reason[too_long] = R_TOO_LONG
    slow = ~(fast | empty | scientific | too_long)
    if slow.any():
        e164 = _normalize_slowly(values, slow, region, reason, e164)
    e164 = pc.if_else(pa.array(reason == OK), e164, pa.scalar(None, pa.string()))
    return Normalized(e164, reason)


def _normalize_slowly(values: pa.Array, slow: np.ndarray, region: str, reason: np.ndarray, e164: pa.Array) -> pa.Array:
    """`phonenumbers` for the values the fast path did not recognise, once per distinct value; sets their
    reason codes in `reason` and returns `e164` with their numbers. Distinct values are found by Arrow's
    dictionary encoding, so memory follows their total length, never (count x longest)."""
    encoded = pc.dictionary_encode(values.filter(pa.array(slow)))
    answers = [normalize_one(value, region) for value in encoded.dictionary.to_pylist()]
    inverse = encoded.indices.to_numpy(zero_copy_only=False)
    reason[slow] = np.array([code for _, code in answers], dtype=np.int8)[inverse]
    slow_e164 = pa.array([answers[i][0] for i in inverse], pa.string())
    return pc.replace_with_mask(e164, pa.array(slow), slow_e164)


def _classify(national: pa.Array) -> np.ndarray:
    """Reason codes for ten-digit IN national numbers, decided as `phonenumbers.number_type` decides.

    Outside the general pattern a number is invalid; a service type (toll free,
    UAN...) wins over everything; a fixed-line match is a landline unless the
    mobile pattern matches too (then it is "fixed line or mobile"); and a mobile
    match is a mobile.
    """

    def matches(pattern: str | None) -> np.ndarray:
        if pattern is None:
            return np.zeros(len(national), dtype=bool)
        return _mask(pc.match_substring_regex(national, pattern))

    general = matches(_IN.general)
    service = np.zeros(len(national), dtype=bool)
    for pattern in _IN.services:
        service |= matches(pattern)
    fixed, mobile = matches(_IN.fixed), matches(_IN.mobile)
    reason = np.full(len(national), R_INVALID, dtype=np.int8)
    reason[general & (service | fixed)] = R_NOT_MOBILE
    reason[general & ~service & mobile] = OK
    return reason
