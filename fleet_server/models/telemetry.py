"""Telemetry windows as devices reported them, and the reference profiles they were binned on.

``telemetry_window`` is keyed by (device_id, window_start, seq): the dedupe key
of at-least-once ingest, and a time column leading no index but the primary
key's second part, so a time-series extension (e.g. a TimescaleDB hypertable
on ``window_start``) can take the table as it is. What queries filter and
aggregate on (model, counts, latency percentiles, quality, system metrics) are
plain columns; only the histograms, which are merged in Python, are JSON.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Text
from sqlmodel import Field, SQLModel

import fleet_server.models.common  # noqa: F401  (the constraint naming convention applies first)
from fleet_server.core.types import UTCDateTime, utcnow


class TelemetryWindowRecord(SQLModel, table=True):
    __tablename__ = "telemetry_window"
    __table_args__ = (
        Index("ix_telemetry_window_window_start", "window_start"),
        Index("ix_telemetry_window_model", "model_name", "model_version", "window_start"),
    )

    device_id: str = Field(primary_key=True, max_length=63)
    window_start: datetime = Field(primary_key=True, sa_type=UTCDateTime)
    seq: int = Field(primary_key=True, sa_type=BigInteger)
    window_end: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    model_name: str | None = Field(default=None, max_length=128)
    model_version: int | None = None
    requests: int = Field(default=0, sa_type=BigInteger)
    errors: int = Field(default=0, sa_type=BigInteger)
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_counts: list[int] = Field(default_factory=list, sa_type=JSON)
    profile_sha256: str | None = Field(default=None, max_length=64)
    feature_counts: list[list[int]] | None = Field(default=None, sa_type=JSON)
    feature_missing: list[int] | None = Field(default=None, sa_type=JSON)
    predictions: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    schema_violations: int = 0
    out_of_range: int = Field(default=0, sa_type=BigInteger)
    nan_count: int = Field(default=0, sa_type=BigInteger)
    cpu_percent: float | None = None
    rss_bytes: int | None = Field(default=None, sa_type=BigInteger)
    temperature_c: float | None = None
    disk_free_bytes: int | None = Field(default=None, sa_type=BigInteger)
    evicted: int = 0
    shadow: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    shadow_agreement: float | None = None


class ReferenceProfileRecord(SQLModel, table=True):
    """A reference profile windows were binned on, copied from the artifact store at first sight."""

    __tablename__ = "reference_profile"

    sha256: str = Field(primary_key=True, max_length=64)
    input_name: str = Field(max_length=256)
    samples: int = Field(sa_type=BigInteger)
    document: str = Field(sa_type=Text)  # the canonical profile bytes
    stored_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
