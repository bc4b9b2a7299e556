"""Writing the engine's files so that they are safe to keep and safe to open in a spreadsheet.

The files the engine writes (rejects, reports) hold full numbers and emails.
They are created readable by their owner only (0600, whatever the umask), never
through a symbolic link, never over the file they were made from, and never
over an existing file unless asked (`--force`); a default name that is taken
(by other contents: the same plan made twice finds its file as it left it)
moves to a fresh one beside it (`contacts.rejects-2.csv`), which the caller
shows. Each file is written whole or not at all.

They are also opened in Excel or Google Sheets, which run a cell that starts
with `=`, `+`, `-` or `@` as a formula (CSV injection), also after leading
spaces, a no-break space or a BOM, and in the full-width forms. Such cells get
a leading apostrophe, which spreadsheets show as text and hide; a plain number
(`+919876543210`, `-5`) is left as it is. The file is UTF-8 with a BOM, so
Excel shows non-ASCII names.
"""

from __future__ import annotations

import enum
import io
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from engine.errors import CampaignError

#: Files the engine creates: read and written by their owner only.
PRIVATE_MODE = 0o600
#: Blanks a spreadsheet may skip before a formula: whitespace, Unicode spaces, BOM and zero-width characters.
_BLANKS = r"[\s\x0B\p{Z}\x{FEFF}\x{180E}\x{200B}-\x{200D}\x{2060}]"
#: What starts a formula, with the full-width and small forms.
_TRIGGERS = r"[=+\-@\x{FF1D}\x{FF0B}\x{FF0D}\x{FF20}\x{FE66}\x{FE62}\x{FE63}\x{FE6B}]"
_FORMULA = rf"^(?:[\t\r\n]|{_BLANKS}*{_TRIGGERS})"
#: A number a spreadsheet reads as the same number: never a formula.
_PLAIN_NUMBER = r"^[+\-]?[0-9]+(?:\.[0-9]+)?$"
#: How many fresh names are tried beside a taken default one.
_FRESH_NAMES = 1000
_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def neutralize(values: pa.Array) -> pa.Array:
    """Prefix an apostrophe to every cell a spreadsheet would evaluate; plain numbers stay as they are."""
    values = values.cast(pa.string())
    risky = pc.fill_null(pc.match_substring_regex(values, _FORMULA), False)
    if not pc.any(risky).as_py():
        return values
    number = pc.fill_null(pc.match_substring_regex(values, _PLAIN_NUMBER), False)
    risky = pc.and_(risky, pc.invert(number))
    return pc.if_else(risky, pc.binary_join_element_wise("'", values, ""), values)


class IfExists(enum.Enum):
    """What writing does when something already stands at the path."""

    #: An error that names the file and `--force` (a path the user gave).
    REFUSE = "refuse"
    #: Replace it (`--force`); a symbolic link is replaced itself, its target is left alone.
    REPLACE = "replace"
    #: Write beside it under a fresh name (a default path): `name-2.csv`, `name-3.csv`, ...
    RENAME = "rename"


@dataclass(frozen=True)
class Target:
    """Where a file goes, what may stand there already, and the file it must never be (the one it was made
    from)."""

    path: Path
    if_exists: IfExists = IfExists.REFUSE
    source: Path | None = None

    @classmethod
    def asked(cls, given: Path | None, default: Path, force: bool, source: Path | None = None) -> Target:
        """The target of an option such as `--out`: a path given is refused if it exists, the default moves to a
        fresh name; `force` (`--force`) replaces either."""
        if force:
            return cls(given or default, IfExists.REPLACE, source)
        if given is not None:
            return cls(given, IfExists.REFUSE, source)
        return cls(default, IfExists.RENAME, source)

    def check(self) -> None:
        """Refuse now what writing would refuse later, before any work (or anything stored) depends on it."""
        renamed = self.if_exists is IfExists.RENAME  # a taken name is never written into
        if self.source is not None and not renamed and _same_file(self.path, self.source):
            raise CampaignError(f"{self.path} is the file being read ({self.source}): choose another path")
        if self.if_exists is IfExists.REFUSE and os.path.lexists(self.path):
            raise _taken(self.path)

    def write(self, data: bytes) -> Path:
        """Write `data` as a new private file; returns where it went (another name when renamed)."""
        self.check()
        try:
            if self.if_exists is IfExists.REPLACE and os.path.lexists(self.path):
                return _replace(self.path, data)
            return _create(self.path, data, self.if_exists is IfExists.RENAME)
        except OSError as exc:
            raise CampaignError(f"cannot write {self.path}: {exc.strerror or exc}") from None


def _same_file(path: Path, source: Path) -> bool:
    """Whether `path` is `source`, by device and inode (through links too)."""
    try:
        return os.path.samefile(path, source)
    except OSError:
        return False


def _taken(path: Path) -> CampaignError:
    return CampaignError(f"{path} already exists: pass --force to replace it, or choose another path")


def _create(path: Path, data: bytes, rename: bool) -> Path:
    """Create the file (never through a link), under a fresh name beside it when `rename` and it is taken; a
    taken name that already holds exactly `data` (the same plan made twice) is that file, written by nobody."""
    names = [path]
    if rename:
        names += [path.with_name(f"{path.stem}-{n}{path.suffix}") for n in range(2, _FRESH_NAMES + 1)]
    for name in names:
        try:
            descriptor = os.open(name, _CREATE, PRIVATE_MODE)
        except FileExistsError:
            if rename and _holds(name, data):
                return name
            continue
        _fill(descriptor, name, data)
        return name
    raise _taken(names[-1] if rename else path)


def _holds(path: Path, data: bytes) -> bool:
    """Whether `path` is a file of its own (not a link) holding exactly `data`."""
    try:
        descriptor = os.open(path, _READ)
    except OSError:
        return False
    with os.fdopen(descriptor, "rb") as file:
        found = os.fstat(file.fileno())
        return stat.S_ISREG(found.st_mode) and found.st_size == len(data) and file.read() == data


def _fill(descriptor: int, name: Path, data: bytes) -> None:
    """Write the whole file, owner-only whatever the umask; a file half written is removed."""
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), PRIVATE_MODE)
            file.write(data)
    except BaseException:
        name.unlink(missing_ok=True)
        raise


def _replace(path: Path, data: bytes) -> Path:
    """Write a private file beside `path`, then put it in its place in one step."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    _fill(descriptor, Path(temporary), data)
    try:
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def create_private(path: Path) -> bool:
    """Create `path` empty and owner-only if nothing stands there; whether it was created."""
    try:
        descriptor = os.open(path, _CREATE, PRIVATE_MODE)
    except OSError:
        return False
    try:
        os.fchmod(descriptor, PRIVATE_MODE)
    finally:
        os.close(descriptor)
    return True


def write_csv(target: Target | Path, columns: Mapping[str, pa.Array]) -> Path:
    """Write the columns (header first) with every text cell neutralized; returns the file written.

    A bare path is written only if nothing stands there yet.
    """
    names = [neutralize(pa.array([name])).to_pylist()[0] for name in columns]
    table = pa.table(
        [neutralize(pa.array(c) if not isinstance(c, pa.Array) else c) for c in columns.values()],
        names=names,
    )
    buffer = io.BytesIO()
    buffer.write("\ufeff".encode())
    pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(include_header=True))
    target = target if isinstance(target, Target) else Target(target)
    return target.write(buffer.getvalue())
