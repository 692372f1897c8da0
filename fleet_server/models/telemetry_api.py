"""API schemas of the telemetry query endpoints."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class TelemetryPoint(BaseModel):
    bucket_start: datetime
    windows: int
    devices: int
    requests: int
    errors: int
    error_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    drift_score: float | None  # largest JS divergence evaluated for the subject in this bucket
    drifted: bool  # a drift test of the subject in this bucket found drift
    schema_violations: int
    out_of_range: int
    evicted: int
    cpu_percent: float | None  # mean over windows
    temperature_c: float | None  # hottest


class TelemetrySeries(BaseModel):
    scope: str  # "device" or "model"
    subject: str  # device id, or model name (with version / tag filters below)
    model_version: int | None
    tag: str | None
    start: datetime
    end: datetime
    bucket_s: int
    points: list[TelemetryPoint]


class DriftEvaluationPublic(BaseModel):
    scope: str
    subject: str
    model_name: str
    model_version: int
    profile_sha256: str
    bucket_start: datetime
    bucket_end: datetime
    evaluated_at: datetime
    samples: int
    sufficient: bool
    drifted: bool
    drift_score: float | None
    max_psi: float | None
    min_adjusted_p: float | None
    drifted_features: int
    prediction_drift: bool
    details: dict[str, Any]


class ModelInService(BaseModel):
    name: str
    version: int
    devices: int
    requests: int
    error_rate: float | None
    latency_p95_ms: float | None


class FleetSummary(BaseModel):
    generated_at: datetime
    range_s: int
    devices: int
    devices_online: int
    devices_reporting: int  # sent at least one window in the range
    windows: int
    requests: int
    errors: int
    error_rate: float | None
    latency_p95_ms: float | None
    models: list[ModelInService]
    alerts_firing: dict[str, int]  # by kind
    ingest: dict[str, int]  # counters of this server process since it started
