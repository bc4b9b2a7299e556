"""The vectorized number path must answer exactly as `phonenumbers` does, forms and classes alike."""

from __future__ import annotations

import re

import numpy as np
import phonenumbers
import pyarrow as pa
import pytest

from engine.planning import phones


def oracle(raw: str, region: str) -> tuple[str | None, int]:
    """phonenumbers on its own: E.164 for a mobile, else the reason code the engine should give.

    A number exported as a float (`919876543210.0`) is asked without its `.0`.
    """
    if not raw.strip():
        return None, phones.R_MISSING
    if re.fullmatch(r"[0-9]+\.0+", raw.strip()):
        raw = raw.strip().split(".")[0]
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None, phones.R_INVALID
    if not phonenumbers.is_valid_number(number):
        return None, phones.R_INVALID
    kind = phonenumbers.number_type(number)
    if kind not in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE):
        return None, phones.R_NOT_MOBILE
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), phones.OK


def varied_sample(count: int, seed: int = 11) -> list[str]:
    """Every national number prefix 6-9 (mobiles, landlines, unassigned) in every way people write them."""
    rng = np.random.default_rng(seed)
    nationals = rng.integers(6_000_000_000, 10_000_000_000, count).astype(str).tolist()
    nationals += rng.integers(1_000_000_000, 6_000_000_000, count // 2).astype(str).tolist()
    writers = [
        lambda n: n,
        lambda n: "0" + n,
        lambda n: "91" + n,
        lambda n: "+91" + n,
        lambda n: "0091" + n,
        lambda n: f"+91 {n[:5]} {n[5:]}",
        lambda n: f"+91-{n[:5]}-{n[5:]}",
        lambda n: f"({n[:3]}) {n[3:6]}-{n[6:]}",
        lambda n: f"{n[:5]}.{n[5:]}",
        lambda n: f" {n}\u00a0",
        lambda n: f"+91 (0) {n}",
        lambda n: f"0{n[:4]}/{n[4:]}",
        lambda n: f"'{n}",
        lambda n: f"'+91 {n}",
    ]
    return [writers[i % len(writers)](n) for i, n in enumerate(nationals)]


TRICKY = [
    "",
    "   ",
    "9.19876E+11",
    "9,19877E+11",
    "919876543210.0",
    "9876543210.0",
    " 09876543210.000 ",
    "02223456789.0",
    "12.0",
    "9876543210.5",
    "9876543210.",
    "+919876543210.0",
    "+44 7700 900123",
    "+1 212 555 0100",
    "+971 50 123 4567",
    "1800 123 4567",
    "022 2345 6789",
    "+91-22-23456789",
    "tel:+919876543210",
    "98765 43210 ext 5",
    "abc",
    "98765",
    "+919876543210123",
    "00919876543210",
    "+910 98765 43210",
    "910 98765 43210",
    "1401234567",
    "+91 140 123 4567",
    "0 1800 123 4567",
    "0 22 2345 6789",
    "'",
    "'0",
    "98765'43210",
    '="9876543210"',
    "\uff19\uff18\uff17\uff16\uff15\uff14\uff13\uff12\uff11\uff10",
    "+91 98765 4321O",
    "6000000000",
    "1234567890",
    "5555555555",
]


@pytest.mark.parametrize("region", ["IN", "GB", "US"])
def test_fast_path_gives_phonenumbers_answers(region: str) -> None:
    sample = varied_sample(6_000) + TRICKY
    result = phones.normalize(pa.array(sample), region)
    got = list(zip(result.e164.to_pylist(), result.reason.tolist(), strict=True))
    scientific = {"9.19876E+11", "9,19877E+11"}
    expected = [(None, phones.R_SCIENTIFIC) if raw in scientific else oracle(raw, region) for raw in sample]
    mismatches = [(raw, g, e) for raw, g, e in zip(sample, got, expected, strict=True) if g != e]
    assert mismatches == []
    # The sample really exercises both answers and both paths.
    codes = set(result.reason.tolist())
    assert {phones.OK, phones.R_INVALID, phones.R_NOT_MOBILE, phones.R_MISSING} <= codes


def test_nulls_count_as_missing() -> None:
    result = phones.normalize(pa.array([None, "9876543210"], pa.string()))
    assert result.e164.to_pylist() == [None, "+919876543210"]
    assert result.reason.tolist() == [phones.R_MISSING, phones.OK]


def test_usual_indian_forms_never_reach_phonenumbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The speed of a large plan rests on this: only unusual values take the per-value path."""
    asked: list[str] = []
    reference = phones.normalize_one

    def counting(raw: str, region: str) -> tuple[str | None, int]:
        asked.append(raw)
        return reference(raw, region)

    monkeypatch.setattr(phones, "normalize_one", counting)
    nationals = np.random.default_rng(5).integers(1_000_000_000, 10_000_000_000, 200).astype(str)
    usual = [
        form
        for n in nationals
        for form in (n, "0" + n, "91" + n, "+91" + n, "0091" + n, f"+91 {n[:5]} {n[5:]}", f"{n[:5]}-{n[5:]}", f"'{n}")
    ]
    result = phones.normalize(pa.array([*usual, "022 2345 6789", "1800 123 456"]), "IN")
    assert asked == []
    assert result.reason[-2:].tolist() == [phones.R_NOT_MOBILE, phones.R_NOT_MOBILE]


def test_numbers_exported_as_decimals_are_read_without_the_decimal() -> None:
    exported = ["919876543210.0", "9876543210.0", "09876543210.00", "02223456789.0", "98765.0"]
    result = phones.normalize(pa.array(exported), "IN")
    got = list(zip(result.e164.to_pylist(), result.reason.tolist(), strict=True))
    assert got == [phones.normalize_one(raw.split(".")[0], "IN") for raw in exported]
    assert got[:3] == [("+919876543210", phones.OK)] * 3
