"""Characters that act instead of printing: control codes and bidirectional overrides.

Text from a contact file, an option or the database reaches two places where such
characters do harm. On a terminal, an escape sequence recolours, moves the
cursor or rewrites the title, and a carriage return hides what came before it.
In a message, a control code is bytes a handset shows as boxes (or an operator
refuses), and a right-to-left override makes `moc.knab` read as `bank.com`, a
known phishing trick. The sets are spelled once here: `visible` shows them as
escapes on a terminal, and the planner strips or warns with the patterns.
"""

from __future__ import annotations

#: C0 controls but tab (indented HTML) and line feed and carriage return (line breaks in every SMS alphabet),
#: DEL, and C1.
MESSAGE_CONTROLS = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
#: The embeddings, overrides and isolates of the Unicode bidirectional algorithm.
BIDI_OVERRIDES = "[\u202a-\u202e\u2066-\u2069]"

_SHOWN_AS_IS = frozenset("\n\t")
_ESCAPED = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0)) if chr(code) not in _SHOWN_AS_IS} | {
    code: f"\\u{code:04x}" for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))
}
_VISIBLE = str.maketrans(_ESCAPED)


def visible(text: str) -> str:
    """`text` with every control code (but newline and tab) and bidirectional override written as its escape,
    as `\\x1b` or `\\u202e`, so a terminal shows them rather than obeys them."""
    return text.translate(_VISIBLE)


def named(char: str) -> str:
    """A character as a person can look it up: `U+001B`."""
    return f"U+{ord(char):04X}"
