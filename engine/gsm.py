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
    """SMS parts needed: 160/153 septets for GSM-7, 70/67 units for UCS-2; an empty text is one part."""
    encoding = encoding or encoding_of(text)
    units = length_in_units(text, encoding)
    if units <= SINGLE[encoding]:
        return 1
    return -(-units // MULTI[encoding])
