"""Personalization and what each message costs in segments."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from engine import gsm
from engine.planning.render import Rendered, Template, TemplateError, encode


def frame(**columns: list[str]) -> pa.Table:
    return pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})


def test_placeholders_fill_from_columns_matched_by_name() -> None:
    template = Template.parse("Hi #First Name#, order #order_id# ships #day|soon#.")
    table = frame(first_name=["Asha", " Ravi "], order_id=["A1", "B2"], day=["Friday", ""])
    rendered = template.render(table)
    assert rendered.texts.to_pylist() == ["Hi Asha, order A1 ships Friday.", "Hi Ravi, order B2 ships soon."]
    assert list(rendered.reason) == [None, None]


def test_a_placeholder_without_a_column_is_an_error_naming_it() -> None:
    template = Template.parse("Hi #name#, your #coupon# is ready")
    with pytest.raises(TemplateError, match="#coupon# but the file has no such column"):
        template.check_columns({"name": "Name", "mobile": "Mobile"})


def test_an_empty_value_without_default_refuses_the_row() -> None:
    rendered = Template.parse("Hi #name#, code #code#").render(frame(name=["Asha", "", "Ravi"], code=["1", "2", ""]))
    assert list(rendered.reason) == [None, "empty value for #name#", "empty value for #code#"]


def test_hashes_in_html_and_css_are_text_not_placeholders() -> None:
    body = (
        '<td style="border-color:#fff #eee #ccc #ddd;color: #333">Hi #first name#, see <a href="#top">#Offer No.#</a>'
    )
    template = Template.parse(body)
    assert [p.key for p in template.placeholders] == ["first_name", "offer_no"]
    rendered = template.render(frame(first_name=["Asha"], offer_no=["D-7"]))
    assert rendered.texts.to_pylist() == [
        '<td style="border-color:#fff #eee #ccc #ddd;color: #333">Hi Asha, see <a href="#top">D-7</a>'
    ]
    assert [p.written for p in Template.parse("# name# #name # #name|x y#").placeholders] == ["#name|x y#"]


def test_text_without_placeholders_is_sent_as_written() -> None:
    rendered = Template.parse("Sale ends # tonight #1").render(frame(x=["a", "b"]))
    assert rendered.texts.to_pylist() == ["Sale ends # tonight #1"] * 2


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, "gsm7", 1),
        ("a" * 161, "gsm7", 2),
        ("a" * 306, "gsm7", 2),
        ("a" * 307, "gsm7", 3),
        ("€" * 80, "gsm7", 1),  # extension characters take two septets
        ("€" * 81, "gsm7", 2),
        ("a" * 158 + "[]", "gsm7", 2),
        ("₹" * 70, "ucs2", 1),
        ("₹" * 71, "ucs2", 2),
        ("₹" * 134, "ucs2", 2),
        ("₹" * 135, "ucs2", 3),
        ("😀" * 35, "ucs2", 1),  # outside the BMP: two UTF-16 units each
        ("😀" * 36, "ucs2", 2),
        ("", "gsm7", 1),
    ],
)
def test_encoding_and_segments_match_the_reference(text: str, encoding: str, segments: int) -> None:
    encoded = encode(pa.array([text]))
    assert ("ucs2" if encoded.ucs2[0] else "gsm7") == encoding == gsm.encoding_of(text)
    assert encoded.segments[0] == segments == gsm.segments(text)


def test_two_unit_characters_are_never_split_between_parts() -> None:
    texts = ["a" * 152 + "€" + "a" * 10, "a" * 152 + "{" + "a" * 200, "₹" * 66 + "😀" + "₹" * 5, "€" * 90, "b" * 400]
    encoded = encode(pa.array(texts))
    assert encoded.segments.tolist() == [gsm.segments(t) for t in texts]
    assert encoded.segments[0] == 2 and encoded.segments[2] == 2


def test_segments_agree_with_the_reference_on_random_long_texts() -> None:
    rng = np.random.default_rng(3)
    alphabet = list("abc XYZ.,!") + list("€{}[]~|^\\") + ["₹", "é", "😀"]
    weights = np.array([20.0] * 10 + [1.0] * 9 + [0.3, 1.0, 0.3])
    texts = [
        "".join(rng.choice(alphabet, size=int(rng.integers(60, 480)), p=weights / weights.sum())) for _ in range(1_500)
    ]
    encoded = encode(pa.array(texts))
    assert encoded.segments.tolist() == [gsm.segments(t) for t in texts]
    assert encoded.ucs2.tolist() == [gsm.encoding_of(t) == "ucs2" for t in texts]


def test_pieces_add_up_like_whole_messages() -> None:
    template = Template.parse("Namaste #name#, {offer} #amount# €")
    table = frame(name=["Asha", "अनु", "Ravi"], amount=["₹500", "500", "x" * 150])
    rendered = template.render(table)
    by_pieces = encode(rendered)
    whole = [gsm.segments(t) for t in rendered.texts.to_pylist()]
    assert by_pieces.segments.tolist() == whole
    assert by_pieces.ucs2.tolist() == [True, True, False]
    assert by_pieces.summary() == {
        "gsm7": {"messages": 1},
        "ucs2": {"messages": 2, "because_of": {"अ": 1, "₹": 1}},
    }


def test_smart_encoding_keeps_typographic_text_in_gsm7() -> None:
    template = Template.parse("Don\u2019t miss it \u2013 \u201ctoday\u201d only\u00a0#name#\u2026")
    rendered = template.render(frame(name=["Asha", "Ravi\u2019s"]))
    assert encode(rendered).ucs2.tolist() == [True, True]
    plain, changed = rendered.replace_lookalikes()
    assert changed == 2
    assert plain.texts.to_pylist() == [
        'Don\'t miss it - "today" only Asha...',
        "Don't miss it - \"today\" only Ravi's...",
    ]
    assert encode(plain).ucs2.tolist() == [False, False]


def test_filter_keeps_pieces_and_texts_aligned() -> None:
    rendered = Template.parse("#a#-#b#").render(frame(a=["1", "2", "3"], b=["x", "y", "z"]))
    _ = rendered.texts
    kept = rendered.filter(pa.array([True, False, True]).to_numpy(zero_copy_only=False))
    assert kept.texts.to_pylist() == ["1-x", "3-z"]
    assert Rendered(kept.pieces, kept.rows, kept.reason).texts.to_pylist() == ["1-x", "3-z"]
