"""DLT templates: the registry, and the checks operators apply before they deliver an SMS."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import Engine

from engine.planning.dlt import (
    DltError,
    DltTemplate,
    default_registry,
    find_template,
    import_templates,
    read_registry,
    stored_templates,
)
from engine.planning.render import Template

SHIPPED = DltTemplate(
    "1207161234567890123",
    "1201159876543210987",
    "ACMEIN",
    "Service Implicit",
    "Hi {#var#}, your order {#var#} has shipped and will reach you by {#var#}. -ACME",
)


def test_rendered_messages_match_with_operator_whitespace_rules() -> None:
    texts = pa.array(
        [
            "Hi Asha, your order A1 has shipped and will reach you by Friday. -ACME",
            "Hi  Asha,\nyour order A1 has shipped and will reach you by Friday.  -ACME ",
            "Hi Asha Rao Bhagyalakshmi Venkataraman, your order A1 has shipped and will reach you by Friday. -ACME",
            "Hi Asha, your order A1 was shipped and will reach you by Friday. -ACME",
        ]
    )
    ok, reason = SHIPPED.match(texts)
    assert ok.tolist() == [True, True, False, False]
    assert reason[2] == "a variable part is longer than 30 characters (DLT template 1207161234567890123)"
    assert reason[3] == "text does not match DLT template 1207161234567890123"


def test_unicode_spaces_count_as_whitespace_on_both_sides() -> None:
    registered = DltTemplate(
        "1207161234567890124", "1", "ACMEIN", None, "Hi\u00a0{#var#},\u2009your code is {#var#}.\u3000-ACME "
    )
    texts = pa.array(
        [
            "Hi Asha, your code is 1234. -ACME",
            "Hi\u00a0Asha,\u00a0 your\u202fcode is 1234.\u2003-ACME\u00a0",
            "\u00a0Hi Asha,\u205fyour code\u1680is 1234. -ACME",
            "Hi Asha, your code was 1234. -ACME",
        ]
    )
    assert registered.match(texts)[0].tolist() == [True, True, True, False]
    registered.check_static_text("Hi x,\u00a0your code is x. -ACME")


def test_variable_length_is_configurable() -> None:
    text = pa.array(
        ["Hi Asha Rao Bhagyalakshmi Venkataraman, your order A1 has shipped and will reach you by Friday. -ACME"]
    )
    assert SHIPPED.match(text, var_max=50)[0].tolist() == [True]


def test_special_characters_in_registered_text_are_literal() -> None:
    template = DltTemplate("120716123456789", "1", "ACMEIN", None, "Pay Rs.{#var#} (incl. GST) at a.b/c?d=1 *now*")
    ok, _ = template.match(
        pa.array(["Pay Rs.500 (incl. GST) at a.b/c?d=1 *now*", "Pay Rs.500 (incl. GST) at aXb/c?d=1 *now*"])
    )
    assert ok.tolist() == [True, False]


def test_static_text_that_cannot_match_is_refused_before_any_row() -> None:
    SHIPPED.check_static_text(
        Template.parse("Hi #name#, your order #order# has shipped and will reach you by Friday. -ACME").skeleton()
    )
    with pytest.raises(DltError, match="does not match DLT template 1207161234567890123 at all"):
        SHIPPED.check_static_text(Template.parse("Big sale today, #name#! -ACME").skeleton())


def test_sender_must_be_the_registered_header() -> None:
    SHIPPED.check_sender("acmein")
    with pytest.raises(DltError, match="sender ACMEXX is not the header ACMEIN"):
        SHIPPED.check_sender("ACMEXX")


@pytest.mark.parametrize(
    ("template_id", "entity_id", "header", "message"),
    [
        ("12345", "1201159876543210987", "ACMEIN", "must be 12 to 19 digits"),
        ("12071612345678901234", "1201159876543210987", "ACMEIN", "must be 12 to 19 digits"),
        ("1207161234567890ABC", "1201159876543210987", "ACMEIN", "must be 12 to 19 digits"),
        ("1207161234567890123", "PE-1201", "ACMEIN", "must be numeric"),
        ("1207161234567890123", "1201159876543210987", "ACME IN!", "3 to 11 letters or digits"),
    ],
)
def test_ids_and_headers_are_checked_for_format(template_id: str, entity_id: str, header: str, message: str) -> None:
    with pytest.raises(DltError, match=message):
        DltTemplate(template_id, entity_id, header, None, "Hi {#var#}").validate()


def test_registry_csv_as_portals_export_it(tmp_path: Path) -> None:
    path = tmp_path / "registry.csv"
    path.write_text(
        "Template ID;PE ID;Sender ID;Template Type;Template Content\n"
        '1207161234567890999;1201159876543210987;ACMEIN;Transactional;"Code {#var#}; valid {# var #} min"\n',
        encoding="utf-8-sig",
    )
    [template] = read_registry(path)
    assert (template.template_id, template.header, template.category) == (
        "1207161234567890999",
        "ACMEIN",
        "Transactional",
    )
    assert template.match(pa.array(["Code 1234; valid 10 min"]))[0].tolist() == [True]


def test_registry_with_a_bad_row_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "registry.csv"
    path.write_text("template_id,entity_id,header,text\n1207161234567890999,1,ACMEIN,Hi\n99,1,ACMEIN,Hi\n")
    with pytest.raises(DltError, match="line 3: DLT template id '99' must be 12 to 19 digits"):
        read_registry(path)


def test_shipped_registry_loads_and_is_valid() -> None:
    registry = default_registry()
    assert SHIPPED in registry
    assert all(t.validate() for t in registry)


def test_import_replaces_by_id_and_wins_over_shipped(database: Engine) -> None:
    changed = DltTemplate(SHIPPED.template_id, SHIPPED.entity_id, "ACMEXY", "Service Implicit", "Hi {#var#}")
    other = DltTemplate("1207161234567890777", "1201159876543210987", "ACMEIN", None, "Bye {#var#}")
    assert import_templates(database, [changed, other]) == 2
    assert import_templates(database, [changed]) == 1
    assert [t.template_id for t in stored_templates(database)] == [SHIPPED.template_id, other.template_id]
    assert find_template(SHIPPED.template_id, database).header == "ACMEXY"
    assert find_template("1207161234567890124", database).header == "ACMEIN"
    with pytest.raises(DltError, match="not in the registry"):
        find_template("1207161234567890000", database)
