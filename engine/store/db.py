"""Opening the database, keeping its schema current, and the one fast bulk insert.

A SQLite file is brought to the current schema when it is opened (a new one,
readable by its owner only, on first use), so `campaign plan --save` works on a
new machine with no setup; PostgreSQL is migrated on purpose with
`campaign db upgrade` (a shared production database is not changed as a side
effect of planning). Bulk writes of messages go through `bulk_insert`, which
uses each driver's fastest path inside the caller's transaction: a raw
`executemany` on sqlite3 (about 4x SQLAlchemy's), `COPY` on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from engine.csvsafe import create_private
from engine.errors import ConfigurationError
from engine.settings import default_database_folder


def normalize_url(url: str) -> str:
    """Plain `postgresql://` URLs use psycopg 3, the driver this project installs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (status, web) work while a worker writes; NORMAL sync is
    # durable across application crashes, which is what WAL needs.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    # 64 MiB of page cache rather than 2: a campaign's million rows and their indexes are read and
    # written in place page after page (sending, applying reports).
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets the pragmas every connection needs."""
    url = normalize_url(url)
    try:
        # Statement parameters hold addresses and message texts: never in an error or a log line.
        engine = create_engine(url, future=True, hide_parameters=True)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ConfigurationError(f"CAMPAIGN_DATABASE_URL is not usable: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        _sqlite_folder(engine.url.database)
        _create_sqlite_file(engine.url.database)
    return engine


def _create_sqlite_file(database: str | None) -> None:
    """A new SQLite file is created owner-only before SQLite opens it: it holds every address, and SQLite gives
    its -wal and -shm files the same mode. An existing file keeps its own."""
    if database and database != ":memory:" and not database.startswith("file:"):
        create_private(Path(database))


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("engine.store") / "migrations"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision` in one transaction."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _describe(url: str) -> str:
    return make_url(normalize_url(url)).render_as_string(hide_password=True)


def _sqlite_folder(database: str | None) -> None:
    """The default database's folder is made (owner-only) on first use; any other must exist."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    folder = Path(database).parent
    if folder.exists():
        return
    if folder != default_database_folder():
        raise ConfigurationError(f"the folder of the SQLite database {database} does not exist")
    try:
        folder.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot make the folder of the database {folder}: {exc.strerror or exc}") from None


def open_database(url: str) -> Engine:
    """An engine on a database at the current schema; SQLite is brought there, PostgreSQL must be."""
    engine = make_engine(url)
    try:
        current = current_revision(engine)
        head = head_revision()
        if current != head and engine.dialect.name == "sqlite":
            _upgrade_sqlite(engine, head)
        elif current != head:
            engine.dispose()
            raise ConfigurationError(
                f"the database {_describe(url)} is at schema {current or 'none'}, not {head}: run `campaign db upgrade`"
            )
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ConfigurationError(f"cannot open the database {_describe(url)}: {reason}") from None
    return engine


def _upgrade_sqlite(engine: Engine, head: str | None) -> None:
    """Migrate; if another process migrated the same new file a moment earlier, its work is enough."""
    try:
        upgrade(engine)
    except OperationalError:
        if current_revision(engine) != head:
            raise


@contextlib.contextmanager
def database(url: str) -> Iterator[Engine]:
    """`open_database` for the length of a `with` block (one command), disposed after."""
    engine = open_database(url)
    try:
        yield engine
    finally:
        engine.dispose()


def bulk_insert(connection: Connection, table: str, columns: Mapping[str, Sequence[Any] | pa.Array]) -> int:
    """Insert equal-length columns into `table` inside the connection's transaction; returns the row count.

    Values may be lists, numpy arrays or pyarrow arrays; None / null is SQL NULL.
    """
    names = list(columns)
    if not names:
        return 0
    counts = {len(values) for values in columns.values()}
    if len(counts) != 1:
        raise ValueError("bulk_insert columns differ in length")
    count = counts.pop()
    if count == 0:
        return 0
    raw = driver_connection(connection)
    if connection.dialect.name == "sqlite":
        placeholders = ", ".join("?" * len(names))
        statement = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({placeholders})"
        # Python lists go to the driver as they are; only arrays are turned into Python values.
        values = [v if isinstance(v, list) else _as_arrow(v).to_pylist() for v in columns.values()]
        cursor = raw.cursor()
        try:
            cursor.executemany(statement, zip(*values, strict=True))
        finally:
            cursor.close()
        return count
    arrays = [_as_arrow(values) for values in columns.values()]
    if connection.dialect.name == "postgresql":
        _copy(raw, table, names, arrays)
        return count
    raise ConfigurationError(f"bulk insert supports SQLite and PostgreSQL, not {connection.dialect.name}")


def driver_connection(connection: Connection) -> Any:
    """The driver's own connection (sqlite3's, psycopg's) under `connection`, for its fast paths."""
    raw = connection.connection.driver_connection
    if raw is None:  # only once the pool has invalidated it, never inside a live transaction
        raise RuntimeError("the database connection was closed")
    return raw


def _as_arrow(values: Sequence[Any] | pa.Array) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    return pa.array(values)


def _copy(raw: Any, table: str, names: list[str], arrays: list[pa.Array], chunk_rows: int = 200_000) -> None:
    """Stream the columns as CSV into `COPY ... FROM STDIN`; pyarrow writes the CSV in C.

    pyarrow quotes every string and leaves nulls as bare empty fields, which is
    exactly how COPY's CSV format tells NULL from an empty string.
    """
    frame = pa.table(arrays, names=names)
    statement = f"COPY {table} ({', '.join(names)}) FROM STDIN WITH (FORMAT csv)"
    options = pa_csv.WriteOptions(include_header=False)
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for start in range(0, frame.num_rows, chunk_rows):
            buffer = io.BytesIO()
            pa_csv.write_csv(frame.slice(start, chunk_rows), buffer, options)
            copy.write(buffer.getbuffer())
