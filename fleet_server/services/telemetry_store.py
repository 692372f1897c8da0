"""Store telemetry windows in batches: one transaction per batch, duplicates skipped by the database.

Rows are inserted with ``INSERT .. ON CONFLICT DO NOTHING`` on the primary key
(device_id, window_start, seq), so a redelivered window is stored once even
when two server replicas receive it. Windows from devices that are not
enrolled are dropped. The reference profile a window was binned on is copied
from the artifact store into the database the first time it is seen.
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from agent.protocol.telemetry import TelemetryWindow, histogram_quantiles
from fleet_server.core.db import write_session
from fleet_server.core.types import UTCDateTime, from_unix, utcnow
from fleet_server.drift.profiles import record_from_store
from fleet_server.models.device import Device
from fleet_server.models.pki import DeviceRevocation
from fleet_server.models.telemetry import ReferenceProfileRecord, TelemetryWindowRecord
from fleet_server.services.artifact_store import ArtifactStore

logger = logging.getLogger(__name__)

WINDOWS = TelemetryWindowRecord.__table__  # type: ignore[attr-defined]
PROFILES = ReferenceProfileRecord.__table__  # type: ignore[attr-defined]
KEY = ["device_id", "window_start", "seq"]
QUANTILES = (0.50, 0.95, 0.99)
QUANTILE_COLUMNS = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
JSON_COLUMNS = frozenset(column.name for column in WINDOWS.columns if isinstance(column.type, JSON))
TIME_COLUMNS = frozenset(column.name for column in WINDOWS.columns if isinstance(column.type, UTCDateTime))
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy's SQLite dialect stores DATETIME (UTC, naive)
SQLITE_INSERT = (f"INSERT INTO telemetry_window ({', '.join(column.name for column in WINDOWS.columns)}) "
                 f"VALUES ({', '.join('?' for _ in WINDOWS.columns)}) "
                 f"ON CONFLICT ({', '.join(KEY)}) DO NOTHING")


@dataclass(frozen=True)
class StoreResult:
    stored: int
    duplicates: int
    unknown_device: int


def window_row(window: TelemetryWindow, received_at: datetime) -> dict[str, Any]:
    latency = list(window.latency_ms)
    features, predictions, shadow = window.features, window.predictions, window.shadow
    return {
        "device_id": window.device_id,
        "window_start": from_unix(window.start),
        "seq": window.seq,
        "window_end": from_unix(window.end),
        "received_at": received_at,
        "model_name": window.model.name if window.model else None,
        "model_version": window.model.version if window.model else None,
        "requests": window.requests,
        "errors": window.errors,
        **dict(zip(QUANTILE_COLUMNS, histogram_quantiles(latency, QUANTILES), strict=True)),
        "latency_counts": latency,
        "profile_sha256": features.profile_sha256 if features else None,
        "feature_counts": [list(row) for row in features.counts] if features else None,
        "feature_missing": list(features.missing) if features else None,
        "predictions": predictions.to_dict() if predictions else None,
        "schema_violations": window.quality.schema_violations,
        "out_of_range": window.quality.out_of_range,
        "nan_count": window.quality.nan,
        "cpu_percent": window.system.cpu_percent,
        "rss_bytes": window.system.rss_bytes,
        "temperature_c": window.system.temperature_c,
        "disk_free_bytes": window.system.disk_free_bytes,
        "evicted": window.evicted,
        "shadow": shadow.to_dict() if shadow else None,
        "shadow_agreement": shadow.agreement if shadow else None,
    }


def _insert(connection: Connection, table: Any, index_elements: list[str]) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=index_elements)


def _sqlite_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in JSON_COLUMNS:
        return json.dumps(value, separators=(",", ":"))
    if name in TIME_COLUMNS:
        return value.astimezone(UTC).strftime(SQLITE_TIME)
    return value


def _insert_sqlite(connection: Connection, rows: list[dict[str, Any]]) -> int:
    """The same insert through the driver's executemany: SQLAlchemy's per-row bind processing is most
    of the cost of a batch on SQLite. Values are stored exactly as the typed columns store them."""
    names = [column.name for column in WINDOWS.columns]
    result = connection.exec_driver_sql(SQLITE_INSERT, [tuple(_sqlite_value(name, row[name]) for name in names)
                                                         for row in rows])
    return int(result.rowcount)  # sqlite3 counts the rows executemany inserted (conflicts excluded)


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
        received_at = utcnow()
        with write_session(self.engine) as session:
            connection = session.connection()
            known = set(connection.execute(
                select(Device.device_id).where(Device.device_id.in_(device_ids),  # type: ignore[attr-defined]
                                               Device.device_id.not_in(  # type: ignore[attr-defined]
                                                   select(DeviceRevocation.device_id)))  # revoked: dropped
            ).scalars())
            accepted = [window for window in windows if window.device_id in known]
            self._ensure_profiles(connection, accepted)
            rows = [window_row(window, received_at) for window in accepted]
            stored = 0
            if rows and connection.dialect.name == "sqlite":
                stored = _insert_sqlite(connection, rows)
            elif rows:
                inserted = connection.execute(_insert(connection, WINDOWS, KEY).returning(WINDOWS.c.seq), rows)
                stored = len(inserted.all())  # RETURNING lists only the rows the conflict clause let in
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
