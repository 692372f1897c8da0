"""Store telemetry windows in batches: one transaction per batch, duplicates skipped by the database.

Rows (built by ``telemetry_rows``) are inserted with ``INSERT .. ON CONFLICT DO NOTHING`` on the
primary key (device_id, window_start, seq), so a redelivered window is stored once even when two
server replicas receive it: on SQLite through the driver's ``executemany``, on PostgreSQL copied
into a temporary table first (``telemetry_copy``). Windows from devices that are not
enrolled are dropped. The reference profile a window was binned on is copied
from the artifact store into the database the first time it is seen.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from agent.protocol.telemetry import TelemetryWindow
from fleet_server.core.db import write_session
from fleet_server.drift.profiles import record_from_store
from fleet_server.models.device import Device
from fleet_server.models.pki import DeviceRevocation
from fleet_server.models.telemetry import ReferenceProfileRecord, TelemetryWindowRecord
from fleet_server.services.artifact_store import ArtifactStore
from fleet_server.services.telemetry_copy import copy_rows
from fleet_server.services.telemetry_rows import COLUMNS, RowBatch, row_batch

logger = logging.getLogger(__name__)

WINDOWS = TelemetryWindowRecord.__table__  # type: ignore[attr-defined]  # set by the mapping; SQLModel does not declare it
PROFILES = ReferenceProfileRecord.__table__  # type: ignore[attr-defined]  # set by the mapping; SQLModel does not declare it
KEY = ["device_id", "window_start", "seq"]
JSON_COLUMNS = frozenset(column.name for column in WINDOWS.columns if isinstance(column.type, JSON))
assert set(COLUMNS) == {column.name for column in WINDOWS.columns}, "telemetry_rows.COLUMNS is out of date"
_CONFLICT = f"ON CONFLICT ({', '.join(KEY)}) DO NOTHING"
SQLITE_INSERT = (f"INSERT INTO telemetry_window ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
                 + _CONFLICT)
POSTGRES_INSERT = (f"INSERT INTO telemetry_window ({', '.join(COLUMNS)}) VALUES "
                   f"({', '.join('CAST(%s AS JSON)' if name in JSON_COLUMNS else '%s' for name in COLUMNS)}) "
                   + _CONFLICT)


@dataclass(frozen=True)
class StoreResult:
    stored: int
    duplicates: int
    unknown_device: int


def _insert(connection: Connection, table: Any, index_elements: list[str]) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=index_elements)


def copies(connection: Connection) -> bool:
    """Whether telemetry goes in through ``COPY`` (PostgreSQL with psycopg 3)."""
    return connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg"


def _insert_rows(connection: Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert through the driver (SQLAlchemy's per-row bind processing was most of the cost of a batch):
    psycopg 3's binary ``COPY``, or the driver's ``executemany`` (SQLite, other PostgreSQL drivers);
    return how many rows were new (the conflict clause's count)."""
    if copies(connection):
        return copy_rows(connection, rows, COLUMNS, KEY)
    statement = SQLITE_INSERT if connection.dialect.name == "sqlite" else POSTGRES_INSERT
    return int(connection.exec_driver_sql(statement, rows).rowcount)


class TelemetryStore:
    def __init__(self, engine: Engine, artifacts: ArtifactStore | None = None) -> None:
        self.engine = engine
        self.artifacts = artifacts
        self._known_profiles: set[str] = set()

    @property
    def sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def store(self, windows: Sequence[TelemetryWindow]) -> StoreResult:
        """Insert ``windows`` in one transaction; return how many were new, duplicates, or unknown."""
        return self.store_rows(row_batch(windows, self.sqlite, time.time()))

    def store_rows(self, batch: RowBatch) -> StoreResult:
        """Insert a batch built by ``row_batch`` (for this store's dialect) in one transaction."""
        if not batch.rows:
            return StoreResult(0, 0, 0)
        with write_session(self.engine) as session:
            connection = session.connection()
            known = set(connection.execute(
                select(col(Device.device_id)).where(col(Device.device_id).in_(sorted(set(batch.device_ids))),
                                                    col(Device.device_id).not_in(
                                                        select(col(DeviceRevocation.device_id))))  # revoked: dropped
            ).scalars())
            rows = [row for device_id, row in zip(batch.device_ids, batch.rows, strict=True) if device_id in known]
            if rows:
                self._ensure_profiles(connection, batch.profiles)
            stored = _insert_rows(connection, rows) if rows else 0
        return StoreResult(stored, len(rows) - stored, len(batch.rows) - len(rows))

    def _ensure_profiles(self, connection: Connection, profiles: frozenset[str]) -> None:
        wanted = profiles - self._known_profiles
        if not wanted:
            return
        present: set[str] = set(connection.execute(
            select(PROFILES.c.sha256).where(PROFILES.c.sha256.in_(sorted(wanted)))).scalars())
        for sha256 in sorted(wanted - present):
            record = record_from_store(self.artifacts, sha256) if self.artifacts is not None else None
            if record is None:
                logger.warning("server event=profile_unknown sha256=%s detail='windows keep their counts; drift "
                               "needs the profile in the artifact store'", sha256)
                continue
            connection.execute(_insert(connection, PROFILES, ["sha256"]), [record.model_dump()])
            present.add(sha256)
            logger.info("server event=profile_stored sha256=%s input=%s", sha256, record.input_name)
        self._known_profiles |= present
