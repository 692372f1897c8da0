"""Database engine and sessions.

SQLite runs in WAL mode with a busy timeout and foreign keys on. Write
transactions call ``begin_write`` first: on SQLite it starts the transaction
with ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout
instead of failing on a stale read snapshot; on PostgreSQL it does nothing
(row locks and unique constraints handle concurrency there).
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Select, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import Session, col

from fleet_server.errors import ConfigurationError

SQLITE_BUSY_TIMEOUT_MS = 30_000
_BEGIN_OPTION = "edgefleet_sqlite_begin"


def create_db_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return create_engine(url, pool_pre_ping=True)
    except ArgumentError as exc:  # also unknown dialects/drivers (NoSuchModuleError)
        raise ConfigurationError(f"invalid EDGEFLEET_DATABASE_URL: {exc}") from None
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _on_begin)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def begin_write(session: Session) -> None:
    """Start a write transaction on ``session``, ending a read-only transaction it may have open."""
    if session.in_transaction():
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("begin_write() called on a session with pending changes")
        session.commit()
    options: dict[str, str] = {_BEGIN_OPTION: "IMMEDIATE"}  # our own key, not in the known-options TypedDict
    session.connection(execution_options=options)


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session whose transaction is a write transaction; commits on success, rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        begin_write(session)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def select_columns(*columns: Any) -> Select[Any]:
    """SELECT of model columns, as many as wanted (sqlmodel's ``select()`` has typed overloads for up to
    four); ``column_rows`` runs it."""
    return select(*(col(column) for column in columns))


def column_rows(session: Session, statement: Select[Any]) -> Sequence[tuple[Any, ...]]:
    """All rows of a ``select_columns`` statement, as tuples to unpack."""
    return session.execute(statement).all()
