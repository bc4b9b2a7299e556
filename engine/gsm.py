"""GSM 03.38 alphabet: which texts fit GSM-7, and how many SMS segments a text costs.

Operators bill per segment, and one character outside GSM-7 switches the whole
message to UCS-2 (70 characters instead of 160), so both the provider clients
(to pick Noxitel's `unicode` mode) and the planner (to count cost) need the same
answer from one place.
"""

from __future__ import annotations

import re
from typing import Literal

Encoding = Literal["gsm7", "ucs2"]

#: The basic GSM-7 character set (3GPP TS 23.038), one septet each.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The extension table: each costs two septets (an escape, then the character).
GSM7_EXTENDED = "^{}\\[~]|€\f"

_NOT_GSM7 = re.compile("[^" + re.escape(GSM7_BASIC.replace("\x1b", "") + GSM7_EXTENDED) + "]")
_EXTENDED = re.compile("[" + re.escape(GSM7_EXTENDED) + "]")

SINGLE = {"gsm7": 160, "ucs2": 70}
MULTI = {"gsm7": 153, "ucs2": 67}


def is_gsm7(text: str) -> bool:
    """True when every character of `text` has a GSM-7 code."""
    return _NOT_GSM7.search(text) is None


def first_non_gsm7(text: str) -> str | None:
    """The first character that forces UCS-2, for explaining an encoding choice."""
    match = _NOT_GSM7.search(text)
    return match.group() if match else None


def encoding_of(text: str) -> Encoding:
    return "gsm7" if is_gsm7(text) else "ucs2"


def length_in_units(text: str, encoding: Encoding) -> int:
    """Septets for GSM-7 (extension characters count twice); UTF-16 code units for UCS-2."""
    if encoding == "gsm7":
        return len(text) + len(_EXTENDED.findall(text))
    return len(text.encode("utf-16-le")) // 2


def segments(text: str, encoding: Encoding | None = None) -> int:
    """SMS parts needed: 160/153 septets for GSM-7, 70/67 units for UCS-2; an empty text is one part.

    A character that takes two units (a GSM-7 extension character with its
    escape, a UTF-16 surrogate pair) is never split between two parts, so a
    long text holding such characters can need one part more than its length
    divided by the part size.
    """
    encoding = encoding or encoding_of(text)
    units = length_in_units(text, encoding)
    if units <= SINGLE[encoding]:
        return 1
    size = MULTI[encoding]
    if units == len(text):
        return -(-units // size)
    parts, used = 1, 0
    for char in text:
        width = 2 if (char in GSM7_EXTENDED if encoding == "gsm7" else ord(char) > 0xFFFF) else 1
        if used + width > size:
            parts, used = parts + 1, 0
        used += width
    return parts


#: Typographic characters that word processors substitute for plain ones, and the
#: GSM-7 text that looks the same: one curly quote otherwise turns a whole
#: message into UCS-2 and can double its segments. Applied only when asked for
#: ("smart encoding"), since it changes what the recipient reads.
LOOKALIKES: dict[str, str] = {
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u00b4\u2039\u203a", "'"),  # curly and angle single quotes
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb", '"'),  # curly and angle double quotes
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),  # hyphens, dashes, minus
    **dict.fromkeys("\u00a0\u2002\u2003\u2007\u2009\u200a\u202f", " "),  # non-breaking and typeset spaces
    **dict.fromkeys("\u200b\ufeff", ""),  # zero-width space, stray byte-order mark
    "\u2026": "...",
}


#: `LOOKALIKES` as `str.translate` takes it, by code point (what `str.maketrans` builds), built once.
_LOOKALIKE_TABLE: dict[int, str] = {ord(char): plain for char, plain in LOOKALIKES.items()}


def replace_lookalikes(text: str) -> str:
    """`text` with each typographic look-alike replaced by its GSM-7 twin."""
    return text.translate(_LOOKALIKE_TABLE)
