"""Writing CSV files that are safe to open in a spreadsheet.

The files the engine writes (rejects, exports) are opened in Excel or Google
Sheets by the people who uploaded the contacts, and a cell starting with
`=`, `+`, `-` or `@` (or a tab or carriage return) is run there as a formula
(CSV injection). Such cells get a leading apostrophe, which spreadsheets show as
text and hide. The file is UTF-8 with a BOM, so Excel shows non-ASCII names.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from engine.errors import CampaignError

_FORMULA_TRIGGER = r"^[=+\-@\t\r]"


def neutralize(values: pa.Array) -> pa.Array:
    """Prefix an apostrophe to every cell a spreadsheet would evaluate."""
    values = values.cast(pa.string())
    risky = pc.fill_null(pc.match_substring_regex(values, _FORMULA_TRIGGER), False)
    return pc.if_else(risky, pc.binary_join_element_wise("'", values, ""), values)


def write_csv(path: Path, columns: Mapping[str, pa.Array]) -> Path:
    """Write the columns (header first) with every text cell neutralized."""
    names = [neutralize(pa.array([name])).to_pylist()[0] for name in columns]
    table = pa.table(
        [neutralize(pa.array(c) if not isinstance(c, pa.Array) else c) for c in columns.values()],
        names=names,
    )
    buffer = io.BytesIO()
    buffer.write("\ufeff".encode())
    pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(include_header=True))
    try:
        path.write_bytes(buffer.getvalue())
    except OSError as exc:
        raise CampaignError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
