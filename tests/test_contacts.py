"""Contact files as spreadsheets and CRMs write them, and every reason a row is refused."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from engine.planning import phones
from engine.planning.contacts import (
    DUPLICATE,
    OK,
    REJECTED,
    SUPPRESSED,
    SUPPRESSED_REASON,
    ContactsError,
    column_key,
    ingest,
    read_contacts,
)

ROWS = [("Asha", "98765 43210"), ("Ravi", "+91-91234-56789"), ("Élodie", "(0)70123 45678")]


def write(path: Path, text: str, encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


def table_text(delimiter: str = ",", header: tuple[str, str] = ("Name", "Mobile Number")) -> str:
    lines = [delimiter.join(header)] + [delimiter.join(row) for row in ROWS]
    return "\n".join(lines) + "\n"


def addresses(path: Path, **options: object) -> list[str | None]:
    contacts = ingest(read_contacts(path), channel="sms", region="IN", **options)
    return contacts.addresses.to_pylist()


EXPECTED = ["+919876543210", "+919123456789", "+917012345678"]


@pytest.mark.parametrize(
    ("encoding", "written_as"),
    [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("utf-16", "utf-16"), ("cp1252", "windows-1252")],
)
def test_reads_each_encoding_spreadsheets_write(tmp_path: Path, encoding: str, written_as: str) -> None:
    path = write(tmp_path / "contacts.csv", table_text(), encoding)
    parsed = read_contacts(path)
    assert parsed.encoding == written_as
    assert parsed.table.column("name").to_pylist() == ["Asha", "Ravi", "Élodie"]
    assert addresses(path) == EXPECTED


def test_utf16_without_bom_is_recognised(tmp_path: Path) -> None:
    path = write(tmp_path / "contacts.csv", table_text(), "utf-16-le")
    assert read_contacts(path).table.column("name").to_pylist() == ["Asha", "Ravi", "Élodie"]


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiter_is_sniffed(tmp_path: Path, delimiter: str) -> None:
    path = write(tmp_path / "contacts.csv", table_text(delimiter))
    parsed = read_contacts(path)
    assert parsed.delimiter == delimiter
    assert addresses(path) == EXPECTED


def test_crlf_and_quoted_fields(tmp_path: Path) -> None:
    text = 'Name,Mobile Number,Note\n"Rao, Asha",98765 43210,"said ""hi"""\nRavi,"+91 91234 56789",\n'
    path = write(tmp_path / "contacts.csv", text, newline="\r\n")
    parsed = read_contacts(path)
    assert parsed.table.column("name").to_pylist() == ["Rao, Asha", "Ravi"]
    assert parsed.table.column("note").to_pylist() == ['said "hi"', ""]
    assert parsed.lines.tolist() == [2, 3]
    assert addresses(path) == EXPECTED[:2]


@pytest.mark.parametrize(
    "header",
    ["Mobile Number", "phone", "MSISDN", " MOBILE_NUMBER ", "Phone-No", "Mobile No.", "Phone #", "Contact No."],
)
def test_address_column_found_by_usual_names(tmp_path: Path, header: str) -> None:
    path = write(tmp_path / "contacts.csv", table_text(header=("Name", header)))
    assert addresses(path) == EXPECTED


@pytest.mark.parametrize(
    ("header", "key"),
    [("Mobile No.", "mobile_no"), ("Phone #", "phone"), ("  E-Mail ID ", "e_mail_id"), ("मोबाइल नंबर", "मोबाइल_नंबर")],
)
def test_column_keys_fold_case_spaces_and_punctuation_but_keep_letters(header: str, key: str) -> None:
    assert column_key(header) == key


def test_to_column_names_the_address_column(tmp_path: Path) -> None:
    text = "Name,Office,Cell Number\nAsha,022 2345 6789,9876543210\n"
    path = write(tmp_path / "contacts.csv", text)
    assert addresses(path, to_column="cell number") == ["+919876543210"]
    with pytest.raises(ContactsError, match="no column named 'Fax'"):
        addresses(path, to_column="Fax")


def test_email_channel_validates_and_lowercases(tmp_path: Path) -> None:
    text = "Name,E-mail\nA,Asha@Example.COM\nB,not-an-email\nC,\nD,asha@example.com\n"
    path = write(tmp_path / "contacts.csv", text)
    contacts = ingest(read_contacts(path), channel="email", region="IN")
    assert contacts.addresses.to_pylist()[0] == "asha@example.com"
    assert contacts.outcome.tolist() == [OK, REJECTED, REJECTED, DUPLICATE]
    assert list(contacts.reason[1:]) == ["not a valid email address", "no email address", "duplicate of line 2"]


def test_each_rejection_reason_with_its_line(tmp_path: Path) -> None:
    text = (
        "name,mobile\n"
        "A,9876543210\n"  # 2 ok
        "B,\n"  # 3 missing
        "C,9.19876E+11\n"  # 4 Excel
        "D,12345\n"  # 5 invalid
        "E,022 2345 6789\n"  # 6 landline
        "F,+91 98765-43210\n"  # 7 duplicate of 2, written differently
        "G,09123456789\n"  # 8 suppressed
    )
    path = write(tmp_path / "contacts.csv", text)
    contacts = ingest(read_contacts(path), channel="sms", region="IN", suppressed=pa.array(["+919123456789"]))
    assert contacts.file.lines.tolist() == [2, 3, 4, 5, 6, 7, 8]
    assert contacts.outcome.tolist() == [OK, REJECTED, REJECTED, REJECTED, REJECTED, DUPLICATE, SUPPRESSED]
    assert list(contacts.reason[1:]) == [
        phones.MISSING,
        phones.SCIENTIFIC,
        phones.INVALID,
        phones.NOT_MOBILE,
        "duplicate of line 2",
        SUPPRESSED_REASON,
    ]
    assert "scientific notation" in phones.SCIENTIFIC and "Text" in phones.SCIENTIFIC


def test_first_of_duplicates_wins_even_after_a_rejected_copy(tmp_path: Path) -> None:
    text = "mobile\n12\n09876543210\n+919876543210\n98765 43210\n"
    contacts = ingest(read_contacts(write(tmp_path / "c.csv", text)), channel="sms", region="IN")
    assert contacts.outcome.tolist() == [REJECTED, OK, DUPLICATE, DUPLICATE]
    assert list(contacts.reason[2:]) == ["duplicate of line 3", "duplicate of line 3"]


def test_line_numbers_skip_blank_lines_and_follow_multiline_cells(tmp_path: Path) -> None:
    blank = "name,mobile\nA,9876543210\n\nB,9123456789\n\n"
    assert read_contacts(write(tmp_path / "blank.csv", blank)).lines.tolist() == [2, 4]
    multiline = 'name,mobile\n"A\nsecond line",9876543210\nB,9123456789\n'
    assert read_contacts(write(tmp_path / "multi.csv", multiline)).lines.tolist() == [2, 4]


def test_rows_with_the_wrong_number_of_fields_are_rejected_with_their_line(tmp_path: Path) -> None:
    text = "name,mobile\nA,9876543210\nB,9123456789,extra\nC,9000000001\n"
    parsed = read_contacts(write(tmp_path / "c.csv", text))
    assert parsed.lines.tolist() == [2, 4]
    assert [(line, raw) for line, raw, _ in parsed.malformed] == [(3, "B,9123456789,extra")]
    assert "3 fields but the header has 2" in parsed.malformed[0][2]


def test_rejects_file_lists_every_refused_row_in_file_order(tmp_path: Path) -> None:
    text = "name,mobile\nA,=cmd|' /C calc'!A0\nB,9876543210\nC,B,x\nD,9876543210\n"
    path = write(tmp_path / "contacts.csv", text)
    contacts = ingest(read_contacts(path), channel="sms", region="IN")
    out = contacts.write_rejects(tmp_path / "rejects.csv")
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    lines = raw.decode("utf-8-sig").splitlines()
    assert lines[0] == '"line","mobile","reason"'
    assert lines[1] == '"2","\'=cmd|\' /C calc\'!A0","not a valid phone number"'
    assert lines[2].startswith('"4","C,B,x","row has 3 fields')
    assert lines[3] == '"5","9876543210","duplicate of line 3"'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"  \n\n", "is empty"),
        (b"name,mobile\n", "has a header but no rows"),
        (b"name,mobile", "has a header but no rows"),
        (b"name,mobile\r\n  \r\n", "has a header but no rows"),
        (b"PK\x03\x04\x14\x00\x06\x00", "Excel workbook"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10", "not a CSV"),
    ],
)
def test_unusable_files_are_refused_with_one_reason(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(content)
    with pytest.raises(ContactsError, match=message):
        read_contacts(path)


def test_missing_file_and_missing_address_column(tmp_path: Path) -> None:
    with pytest.raises(ContactsError, match="no such file"):
        read_contacts(tmp_path / "nope.csv")
    path = write(tmp_path / "c.csv", "name,city\nAsha,Pune\n")
    with pytest.raises(ContactsError, match=r"no phone number column found.*--to-column"):
        ingest(read_contacts(path), channel="sms", region="IN")


def test_multiline_cells_blank_lines_and_bad_rows_keep_their_physical_lines(tmp_path: Path) -> None:
    text = 'name,phone,note\nAsha,9876543210,"line1\nline2"\n\nRavi,12345,x\nSita,9876543211,y\n'
    contacts = ingest(read_contacts(write(tmp_path / "c.csv", text)), channel="sms", region="IN")
    assert contacts.file.lines.tolist() == [2, 5, 6]
    rejects = contacts.write_rejects(tmp_path / "r.csv").read_text(encoding="utf-8-sig").splitlines()
    assert rejects[1:] == ['"5","12345","not a valid phone number"']


def test_a_short_row_that_repeats_an_earlier_line_is_placed_at_its_own_line(tmp_path: Path) -> None:
    parsed = read_contacts(write(tmp_path / "c.csv", "phone,name\n9876543210,Asha\n9876543210\n9876543212,Sita\n"))
    assert parsed.lines.tolist() == [2, 4]
    assert [(line, raw) for line, raw, _ in parsed.malformed] == [(3, "9876543210")]


def test_quotes_inside_unquoted_cells_with_multiline_cells_and_bad_rows(tmp_path: Path) -> None:
    text = 'name,mobile\nRahul "Raju" Rao,9876543210\n"A\nB",9123456789\n\nC,1,x\nD,9000000001\n'
    parsed = read_contacts(write(tmp_path / "c.csv", text, newline="\r\n"))
    assert parsed.table.column("name").to_pylist() == ['Rahul "Raju" Rao', "A\r\nB", "D"]
    assert parsed.lines.tolist() == [2, 3, 7]
    assert [(line, raw) for line, raw, _ in parsed.malformed] == [(6, "C,1,x")]


@pytest.mark.parametrize(
    "content",
    [
        "name,mobile\nAsha,9876543210\n".encode("utf-16")[:-1],  # cut short mid-character
        b"\xff\xfe" + "name,mobile\n".encode("utf-16-le") + b"\x00\xd8A\x00",  # a lone surrogate
    ],
)
def test_broken_utf16_is_refused_with_one_reason(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(content)
    with pytest.raises(ContactsError, match="looks like UTF-16"):
        read_contacts(path)


def test_a_zero_byte_anywhere_makes_it_binary(tmp_path: Path) -> None:
    rows = "".join(f"Person {i},{9_000_000_000 + i}\n" for i in range(5_000))
    path = write(tmp_path / "c.csv", "name,mobile\n" + rows + "Late,90000\x0000001\n")
    assert path.stat().st_size > 65_536
    with pytest.raises(ContactsError, match="not a CSV file"):
        read_contacts(path)


def test_utf8_with_a_stray_bad_byte_stays_utf8_and_says_so(tmp_path: Path) -> None:
    names = ["Élodie", "Zoë", "अनन्या", "Chloé", "Renée", "Jürgen", "Siân", "François", "Nadège", "Ørjan", "Åsa"]
    text = "name,mobile\n" + "".join(f"{n},{9_000_000_000 + i}\n" for i, n in enumerate(names))
    data = text.encode("utf-8") + b"Bad\xff,9123456789\n"
    path = tmp_path / "c.csv"
    path.write_bytes(data)
    parsed = read_contacts(path)
    assert parsed.encoding == "utf-8"
    assert parsed.table.column("name").to_pylist() == [*names, "Bad\ufffd"]
    assert len(parsed.warnings) == 1 and "1 invalid byte sequence" in parsed.warnings[0]
    # A Windows-1252 file is not mistaken for it: its accented letters are the invalid bytes.
    write(path, text.replace("अनन्या", "Ananya"), "cp1252")
    parsed = read_contacts(path)
    assert parsed.encoding == "windows-1252" and parsed.table.column("name").to_pylist()[0] == "Élodie"
    assert parsed.warnings == []
