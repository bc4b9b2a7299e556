"""India's DLT: the registry of approved templates and the check that each message fits one.

Indian operators drop commercial SMS whose text does not match a template the
sender registered on the DLT platform, so the engine refuses such messages at
plan time instead of paying for them. A registered text marks each variable
part `{#var#}`; operators accept any run of characters there up to a fixed
length (30 by default) and ignore differences in whitespace, which is how the
match is done here: both sides have each whitespace run collapsed to one space
and are trimmed, and each `{#var#}` becomes a bounded run of any characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from engine.errors import CampaignError
from engine.planning.contacts import ContactsError, column_key, read_contacts
from engine.store import models

VAR_MAX = 30
#: The largest bound RE2 takes for a repetition, and far beyond any SMS variable.
VAR_MAX_LIMIT = 1000
#: What counts as whitespace on both sides of the match: ASCII's and Unicode's spaces (no-break,
#: thin, ideographic...), which operators and copy-paste from portals and documents produce alike.
WHITESPACE = "\t\n\v\f\r \x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_VAR = re.compile(r"\{#\s*var\s*#\}", re.IGNORECASE)
_TEMPLATE_ID = re.compile(r"^[0-9]{12,19}$")
_ENTITY_ID = re.compile(r"^[0-9]{1,19}$")
_HEADER = re.compile(r"^[A-Za-z0-9]{3,11}$")


class DltError(CampaignError):
    """A DLT template or its use is wrong; nothing is planned."""


def _literal(text: str) -> str:
    """`text` as an RE2 pattern matching itself: every non-alphanumeric character escaped by code point."""
    return "".join(c if c.isalnum() else f"\\x{{{ord(c):04X}}}" for c in text)


def _re2_class(chars: str) -> str:
    """`chars` (with `a-b` ranges) as an RE2 class, each character by code point."""
    return "[" + re.sub(r"[^-]", lambda m: f"\\x{{{ord(m.group()):04X}}}", chars) + "]"


_SPACE_RE2 = _re2_class(WHITESPACE)
_NOT_PLAIN_SPACE_RE2 = _re2_class(WHITESPACE.replace(" ", ""))
_SPACES = re.compile(f"[{WHITESPACE}]+")


def squash_text(text: str) -> str:
    """One text as `squash_whitespace` makes it, by the same rule."""
    return _SPACES.sub(" ", text).strip(" ")


def squash_whitespace(texts: pa.Array) -> pa.Array:
    """Each whitespace run as one space, trimmed; only texts that need it pay for the rewrite."""
    needs = pc.match_substring_regex(texts, f"  |{_NOT_PLAIN_SPACE_RE2}|^ | $")
    if not pc.any(needs).as_py():
        return texts
    rewritten = pc.utf8_trim(pc.replace_substring_regex(texts.filter(needs), f"{_SPACE_RE2}+", " "), " ")
    return pc.replace_with_mask(texts, needs, rewritten)


@dataclass(frozen=True, slots=True)
class DltTemplate:
    template_id: str
    entity_id: str
    header: str
    category: str | None
    text: str

    def validate(self) -> DltTemplate:
        """Refuse ids and headers the DLT platform could not have issued."""
        if not _TEMPLATE_ID.match(self.template_id):
            raise DltError(f"DLT template id {self.template_id!r} must be 12 to 19 digits")
        if not _ENTITY_ID.match(self.entity_id):
            raise DltError(f"DLT entity id {self.entity_id!r} of template {self.template_id} must be numeric")
        if not _HEADER.match(self.header):
            raise DltError(
                f"DLT header {self.header!r} of template {self.template_id} must be 3 to 11 letters or digits"
            )
        if not self.text.strip():
            raise DltError(f"DLT template {self.template_id} has no text")
        models.bounded(self.category, models.DLT_TEMPLATES.c.category, f"category of DLT template {self.template_id}")
        return self

    def pattern(self, var_max: int | None = VAR_MAX) -> str:
        """An anchored RE2 pattern over whitespace-squashed text; `var_max=None` leaves variables unbounded."""
        squashed = squash_text(self.text)
        run = f"[\\s\\S]{{0,{var_max}}}" if var_max is not None else "[\\s\\S]*"
        return "^" + run.join(_literal(piece) for piece in _VAR.split(squashed)) + "$"

    def check_sender(self, sender: str | None) -> None:
        if not sender or sender.strip().upper() != self.header.upper():
            raise DltError(
                f"sender {sender or '(none)'} is not the header {self.header} registered for DLT template "
                f"{self.template_id}; operators block it"
            )

    def check_static_text(self, skeleton: str, var_max: int = VAR_MAX) -> None:
        """Refuse a message template whose fixed wording cannot produce the registered text."""
        squashed = squash_whitespace(pa.array([skeleton]))
        if not pc.match_substring_regex(squashed, self.pattern(var_max=None))[0].as_py():
            raise DltError(
                f"the message does not match DLT template {self.template_id} at all: registered text is {self.text!r}"
            )

    def match(self, texts: pa.Array, var_max: int = VAR_MAX) -> tuple[np.ndarray, np.ndarray]:
        """Per text: whether it matches, and for those that do not, why (a long variable or other wording)."""
        squashed = squash_whitespace(texts)
        ok = pc.match_substring_regex(squashed, self.pattern(var_max)).to_numpy(zero_copy_only=False)
        reason = np.full(len(texts), None, dtype=object)
        if not ok.all():
            failed = np.flatnonzero(~ok)
            loose = pc.match_substring_regex(squashed.take(pa.array(failed)), self.pattern(var_max=None)).to_numpy(
                zero_copy_only=False
            )
            reason[failed[loose]] = (
                f"a variable part is longer than {var_max} characters (DLT template {self.template_id})"
            )
            reason[failed[~loose]] = f"text does not match DLT template {self.template_id}"
        return ok, reason


_ALIASES = {
    "template_id": ("template_id", "dlt_template_id", "templateid", "content_template_id", "id"),
    "entity_id": ("entity_id", "pe_id", "dlt_entity_id", "entityid", "principal_entity_id"),
    "header": ("header", "sender", "sender_id", "header_name"),
    "category": ("category", "type", "template_type", "content_type"),
    "text": ("text", "template", "template_text", "content", "message", "template_content"),
}


def read_registry(path: Path) -> list[DltTemplate]:
    """Templates from a registry CSV (as exported from a DLT portal, or `config/dlt_templates.csv`)."""
    try:
        parsed = read_contacts(path)
    except ContactsError as exc:
        raise DltError(str(exc).replace("contact", "DLT")) from None
    chosen: dict[str, str] = {}
    for field, names in _ALIASES.items():
        for name in names:
            if column_key(name) in parsed.headers:
                chosen[field] = column_key(name)
                break
    missing = [f for f in ("template_id", "entity_id", "header", "text") if f not in chosen]
    if missing:
        raise DltError(f"{path} has no {', '.join(missing)} column; columns: {', '.join(parsed.headers.values())}")
    if parsed.malformed:
        line, _, reason = parsed.malformed[0]
        raise DltError(f"{path} line {line}: {reason}")
    columns = {f: parsed.table.column(k).to_pylist() for f, k in chosen.items()}
    templates = []
    for i, line in enumerate(parsed.lines):
        try:
            templates.append(
                DltTemplate(
                    template_id=columns["template_id"][i].strip(),
                    entity_id=columns["entity_id"][i].strip(),
                    header=columns["header"][i].strip(),
                    category=(columns["category"][i].strip() or None) if "category" in columns else None,
                    text=columns["text"][i],
                ).validate()
            )
        except DltError as exc:
            raise DltError(f"{path} line {line}: {exc}") from None
    return templates


def default_registry() -> list[DltTemplate]:
    resource = files("engine.config") / "dlt_templates.csv"
    return read_registry(Path(str(resource))) if resource.is_file() else []


def import_templates(engine: Engine, templates: list[DltTemplate]) -> int:
    """Insert or replace templates by id; returns how many were written."""
    if not templates:
        return 0
    rows = [
        {
            "template_id": t.template_id,
            "entity_id": t.entity_id,
            "header": t.header,
            "category": t.category,
            "text": t.text,
            "imported_at": models.utcnow(),
        }
        for t in templates
    ]
    table = models.DLT_TEMPLATES
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    statement = insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=["template_id"],
        set_={c: statement.excluded[c] for c in ("entity_id", "header", "category", "text", "imported_at")},
    )
    with engine.begin() as connection:
        connection.execute(statement, rows)
    return len(rows)


def stored_templates(engine: Engine) -> list[DltTemplate]:
    with engine.connect() as connection:
        rows = connection.execute(select(models.DLT_TEMPLATES).order_by("template_id")).mappings()
        return [DltTemplate(r["template_id"], r["entity_id"], r["header"], r["category"], r["text"]) for r in rows]


def find_template(template_id: str, engine: Engine | None) -> DltTemplate:
    """An imported template wins over the shipped registry of the same id."""
    template_id = template_id.strip()
    if not _TEMPLATE_ID.match(template_id):
        raise DltError(f"DLT template id {template_id!r} must be 12 to 19 digits")
    sources = (stored_templates(engine) if engine is not None else []) + default_registry()
    for template in sources:
        if template.template_id == template_id:
            return template.validate()
    raise DltError(f"DLT template {template_id} is not in the registry: add it with `campaign dlt import FILE`")
