"""PostgreSQL telemetry inserts through binary ``COPY``: a batch is copied into a session-local
temporary table, then moved into ``telemetry_window`` with ``INSERT .. SELECT .. ON CONFLICT DO NOTHING``.

``COPY`` has no conflict clause, hence the staging table. It is created in every batch's transaction
if missing (``CREATE TEMP TABLE IF NOT EXISTS``, so a creation rolled back with its transaction is
simply redone) with ``ON COMMIT DELETE ROWS``: its rows never outlive the transaction that copied
them, committed or rolled back (and a transaction that does not touch it does not truncate it).
It has no key, index or constraint; the move checks them all. Values are sent in binary, each as
its column's type (read from the catalog once per connection), so the server parses no text;
JSON columns go as text, which is json's binary form. ``integer`` columns are staged as ``bigint``:
psycopg's binary ``int4`` dumper wraps a value out of range silently, while ``int8``'s raises and
the move's cast back to ``integer`` refuses what does not fit. A refused value fails the batch with
a ``DataError``, and driver errors are raised as SQLAlchemy's (``DataError``, ``OperationalError``..),
which the ingest writer's retry and split-in-halves catch, as for the insert this replaces. A lost
connection is invalidated, so the retry gets a new one from the pool.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DataError, DBAPIError

TABLE = "telemetry_window"
STAGING = "telemetry_window_staging"
COLUMN_TYPES = (f"SELECT attname, atttypid::int, format_type(atttypid, atttypmod) FROM pg_attribute "
                f"WHERE attrelid = '{TABLE}'::regclass AND attnum > 0 AND NOT attisdropped")
# Staging types wider than the table's (the move's cast checks the range: see above).
_WIDER = {21: (20, "bigint"), 23: (20, "bigint"), 700: (701, "double precision")}
_SEND_AS = {114: 25}  # json: sent as text, its binary form
_STAGING_KEY = "edgefleet_telemetry_staging"


@dataclass(frozen=True)
class Staging:
    create: str  # CREATE TEMP TABLE IF NOT EXISTS ..
    types: list[int]  # the type oid each column is sent as, in ``columns`` order


def copy_statement(columns: Sequence[str]) -> str:
    return f"COPY {STAGING} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"


def move_statement(columns: Sequence[str], key: Sequence[str]) -> str:
    names = ", ".join(columns)
    return f"INSERT INTO {TABLE} ({names}) SELECT {names} FROM {STAGING} ON CONFLICT ({', '.join(key)}) DO NOTHING"


def staging(catalog: Sequence[tuple[str, int, str]], columns: Sequence[str]) -> Staging:
    """The staging table for ``columns`` from ``TABLE``'s (name, type oid, type) catalog rows."""
    found = {name: _WIDER.get(oid, (oid, type_name)) for name, oid, type_name in catalog}
    missing = [name for name in columns if name not in found]
    if missing:
        raise RuntimeError(f"{TABLE} has no column(s) {', '.join(missing)}: is the schema up to date?")
    definitions = ", ".join(f"{name} {found[name][1]}" for name in columns)
    return Staging(f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} ({definitions}) ON COMMIT DELETE ROWS",
                   [_SEND_AS.get(found[name][0], found[name][0]) for name in columns])


def _staging(connection: Connection, cursor: Any, columns: Sequence[str]) -> Staging:
    info = connection.connection.info  # lives as long as the database connection
    table: Staging | None = info.get(_STAGING_KEY)
    if table is None:
        cursor.execute(COLUMN_TYPES)
        table = info[_STAGING_KEY] = staging(cursor.fetchall(), columns)
    return table


def copy_rows(connection: Connection, rows: Sequence[tuple[Any, ...]], columns: Sequence[str],
              key: Sequence[str]) -> int:
    """Insert ``rows`` (in ``columns`` order, JSON columns as text) in ``connection``'s transaction;
    return how many were new (the rest had a key already stored)."""
    driver = connection.connection.driver_connection  # psycopg 3, in the same transaction
    if driver is None:
        raise RuntimeError("the database connection is closed")
    error_type = connection.dialect.loaded_dbapi.Error
    statement = copy_statement(columns)
    try:
        with driver.cursor() as cursor:
            table = _staging(connection, cursor, columns)
            cursor.execute(table.create)
            with cursor.copy(statement) as copy:
                copy.set_types(table.types)
                write_row = copy.write_row
                for row in rows:
                    write_row(row)
            statement = move_statement(columns, key)
            cursor.execute(statement)
            return int(cursor.rowcount)
    except error_type as exc:
        lost = connection.dialect.is_disconnect(exc, driver, None)
        if lost:  # as SQLAlchemy does for its own statements: the pool must not hand this one out again
            connection.invalidate(exc)
        raise DBAPIError.instance(statement, None, exc, error_type, connection_invalidated=lost) from exc
    except OverflowError as exc:  # an int beyond int8 or float8, found by the binary dumpers
        raise DataError(statement, None, exc) from exc
