"""Templates as a provider renders them, and each recipient's values read back from the planned text.

Noxitel takes one `#var#` message per call plus each contact's `parameters`, and
renders the texts itself. The planner stores what each recipient must receive
(the rendered, DLT-checked body), so the values are read back from it with a
pattern built from the same template: any split that matches renders the very
same text. Placeholder names become `v1`, `v2`, ... (campaign columns may hold
spaces), and `#var|default#` loses its default, which the planned body already
carries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from engine.planning.render import Placeholder, Template

#: The template of last resort: the whole planned text as one parameter.
WHOLE_TEXT = "#text#"


@dataclass(frozen=True)
class ProviderTemplate:
    text: str
    params: list[dict[str, str]]


def _compile(template: str) -> tuple[str, re.Pattern[str]]:
    names: dict[str, str] = {}
    text: list[str] = []
    pattern: list[str] = []
    for part in Template.parse(template).parts:
        if isinstance(part, Placeholder):
            name = names.get(part.key)
            if name is None:
                name = names[part.key] = f"v{len(names) + 1}"
                pattern.append(f"(?P<{name}>.*?)")
            else:
                pattern.append(f"(?P={name})")
            text.append(f"#{name}#")
        else:
            text.append(part)
            pattern.append(re.escape(part))
    return "".join(text), re.compile("".join(pattern), re.DOTALL)


def for_provider(template: str, bodies: Sequence[str]) -> ProviderTemplate:
    """The provider's `#var#` text and each body's parameters; falls back to the whole text as one parameter
    when a body no longer follows the template (smart encoding may have replaced characters in it)."""
    text, pattern = _compile(template)
    params: list[dict[str, str]] = []
    for body in bodies:
        match = pattern.fullmatch(body)
        if match is None:
            return ProviderTemplate(WHOLE_TEXT, [{"text": b} for b in bodies])
        params.append(match.groupdict())
    return ProviderTemplate(text, params)
