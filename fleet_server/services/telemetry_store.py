"""Store telemetry windows in batches: one transaction per batch, duplicates skipped by the database.

Rows (built by ``telemetry_rows``) are inserted with the driver's ``executemany`` and
``INSERT .. ON CONFLICT DO NOTHING`` on the primary key (device_id, window_start, seq),
so a redelivered window is stored once even when two server replicas receive it. Windows from devices that are not
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

from agent.protocol.telemetry import TelemetryWindow
from fleet_server.core.db import write_session
from fleet_server.drift.profiles import record_from_store
from fleet_server.models.device import Device
from fleet_server.models.pki import DeviceRevocation
from fleet_server.models.telemetry import ReferenceProfileRecord, TelemetryWindowRecord
from fleet_server.services.artifact_store import ArtifactStore
from fleet_server.services.telemetry_rows import COLUMNS, aware_time, sqlite_time, window_rows

logger = logging.getLogger(__name__)

WINDOWS = TelemetryWindowRecord.__table__  # type: ignore[attr-defined]
PROFILES = ReferenceProfileRecord.__table__  # type: ignore[attr-defined]
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


def _insert_rows(connection: Connection, windows: Sequence[TelemetryWindow]) -> int:
    """Insert through the driver's ``executemany`` (SQLAlchemy's per-row bind processing was most of the
    cost of a batch); return how many rows were new. Both drivers count only the rows the conflict
    clause let in (psycopg sums the counts of an ``executemany``, which it pipelines)."""
    if connection.dialect.name == "sqlite":
        statement, rows = SQLITE_INSERT, window_rows(windows, time.time(), sqlite_time)
    else:
        statement, rows = POSTGRES_INSERT, window_rows(windows, time.time(), aware_time)
    return int(connection.exec_driver_sql(statement, rows).rowcount)


class TelemetryStore:
    def __init__(self, engine: Engine, artifacts: ArtifactStore | None = None) -> None:
        self.engine = engine
        self.artifacts = artifacts
        self._known_profiles: set[str] = set()

    def store(self, windows: Sequence[TelemetryWindow]) -> StoreResult:
        """Insert ``windows`` in one transaction; return how many were new, duplicates, or unknown."""
        if not windows:
            return StoreResult(0, 0, 0)
        device_ids = sorted({window.device_id for window in windows})
        with write_session(self.engine) as session:
            connection = session.connection()
            known = set(connection.execute(
                select(Device.device_id).where(Device.device_id.in_(device_ids),  # type: ignore[attr-defined]
                                               Device.device_id.not_in(  # type: ignore[attr-defined]
                                                   select(DeviceRevocation.device_id)))  # revoked: dropped
            ).scalars())
            accepted = [window for window in windows if window.device_id in known]
            self._ensure_profiles(connection, accepted)
            stored = _insert_rows(connection, accepted) if accepted else 0
        return StoreResult(stored, len(accepted) - stored, len(windows) - len(accepted))

    def _ensure_profiles(self, connection: Connection, windows: Sequence[TelemetryWindow]) -> None:
        wanted = {window.features.profile_sha256 for window in windows if window.features} - self._known_profiles
        if not wanted:
            return
        present = set(connection.execute(
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
