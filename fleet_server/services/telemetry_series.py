"""Telemetry time series (per device, per model version or cohort) and the fleet summary.

Windows are grouped into buckets of ``bucket_s`` seconds by their start;
counts add up, latency percentiles come from the merged histograms, drift
scores from the drift evaluations of the same subject whose bucket starts in
the point's bucket.
"""

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement
from sqlmodel import Session, col, func, select

from agent.protocol.telemetry import histogram_quantile
from fleet_server.alerting.rules import ALL_DEVICES_TAG, COHORT, DEVICE
from fleet_server.core.db import column_rows, select_columns
from fleet_server.core.types import from_unix
from fleet_server.errors import DeviceNotFoundError, InvalidRequestError
from fleet_server.models.alert import Alert, AlertState
from fleet_server.models.device import Device, DeviceTag
from fleet_server.models.drift import DriftEvaluation
from fleet_server.models.telemetry import TelemetryWindowRecord
from fleet_server.models.telemetry_api import (
    DriftEvaluationPublic,
    FleetSummary,
    ModelInService,
    TelemetryPoint,
    TelemetrySeries,
)
from fleet_server.services.telemetry_query import merge_latency

MAX_POINTS = 2000
W = TelemetryWindowRecord


@dataclass
class _Bucket:
    windows: int = 0
    requests: int = 0
    errors: int = 0
    schema_violations: int = 0
    out_of_range: int = 0
    evicted: int = 0
    devices: set[str] = field(default_factory=set)
    latency: list[list[int]] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    temperature: list[float] = field(default_factory=list)
    drift: list[tuple[float | None, bool]] = field(default_factory=list)

    def point(self, start: datetime) -> TelemetryPoint:
        merged = merge_latency(self.latency)
        scores = [score for score, _ in self.drift if score is not None]
        return TelemetryPoint(
            bucket_start=start, windows=self.windows, devices=len(self.devices), requests=self.requests,
            errors=self.errors, error_rate=self.errors / self.requests if self.requests else None,
            latency_p50_ms=histogram_quantile(merged, 0.50), latency_p95_ms=histogram_quantile(merged, 0.95),
            latency_p99_ms=histogram_quantile(merged, 0.99), drift_score=max(scores) if scores else None,
            drifted=any(drifted for _, drifted in self.drift), schema_violations=self.schema_violations,
            out_of_range=self.out_of_range, evicted=self.evicted,
            cpu_percent=sum(self.cpu) / len(self.cpu) if self.cpu else None,
            temperature_c=max(self.temperature) if self.temperature else None,
        )


def _check_range(start: datetime, end: datetime, bucket_s: int) -> None:
    if end <= start:
        raise InvalidRequestError("the range is empty: 'end' must be after 'start'")
    if (end - start).total_seconds() / bucket_s > MAX_POINTS:
        raise InvalidRequestError(f"that range and bucket_s give more than {MAX_POINTS} points; use a larger bucket_s")


def _series(session: Session, conditions: Sequence[ColumnElement[bool]],
            drift_conditions: Sequence[ColumnElement[bool]], start: datetime, end: datetime,
            bucket_s: int) -> list[TelemetryPoint]:
    origin = math.floor(start.timestamp() / bucket_s) * bucket_s
    buckets: dict[int, _Bucket] = defaultdict(_Bucket)
    rows = column_rows(session, select_columns(
        W.device_id, W.window_start, W.requests, W.errors, W.latency_counts, W.schema_violations, W.out_of_range,
        W.evicted, W.cpu_percent, W.temperature_c,
    ).where(col(W.window_start) >= start, col(W.window_start) < end, *conditions))
    for device_id, window_start, requests, errors, latency, violations, out_of_range, evicted, cpu, temp in rows:
        bucket = buckets[int((window_start.timestamp() - origin) // bucket_s)]
        bucket.windows += 1
        bucket.devices.add(device_id)
        bucket.requests += requests
        bucket.errors += errors
        bucket.schema_violations += violations
        bucket.out_of_range += out_of_range
        bucket.evicted += evicted
        bucket.latency.append(latency)
        if cpu is not None:
            bucket.cpu.append(cpu)
        if temp is not None:
            bucket.temperature.append(temp)
    for bucket_start, score, drifted in session.exec(select(
            DriftEvaluation.bucket_start, DriftEvaluation.drift_score, DriftEvaluation.drifted).where(
            col(DriftEvaluation.bucket_start) >= start, col(DriftEvaluation.bucket_start) < end, *drift_conditions)):
        buckets[int((bucket_start.timestamp() - origin) // bucket_s)].drift.append((score, drifted))
    return [bucket.point(from_unix(origin + index * bucket_s)) for index, bucket in sorted(buckets.items())]


def device_series(session: Session, device_id: str, start: datetime, end: datetime, bucket_s: int) -> TelemetrySeries:
    _check_range(start, end, bucket_s)
    if session.get(Device, device_id) is None:
        raise DeviceNotFoundError(f"device {device_id!r} is not enrolled")
    points = _series(session, [col(W.device_id) == device_id],
                     [col(DriftEvaluation.scope) == DEVICE, col(DriftEvaluation.subject) == device_id], start, end,
                     bucket_s)
    return TelemetrySeries(scope="device", subject=device_id, model_version=None, tag=None, start=start, end=end,
                           bucket_s=bucket_s, points=points)


def model_series(session: Session, name: str, version: int | None, tag: str | None, start: datetime, end: datetime,
                 bucket_s: int) -> TelemetrySeries:
    """One model (optionally one version), over all devices or the cohort of devices tagged ``tag``."""
    _check_range(start, end, bucket_s)
    conditions: list[ColumnElement[bool]] = [col(W.model_name) == name]
    drift: list[ColumnElement[bool]] = [col(DriftEvaluation.scope) == COHORT, col(DriftEvaluation.model_name) == name,
                                        col(DriftEvaluation.subject) == (tag or ALL_DEVICES_TAG)]
    if version is not None:
        conditions.append(col(W.model_version) == version)
        drift.append(col(DriftEvaluation.model_version) == version)
    if tag is not None:
        conditions.append(col(W.device_id).in_(select(DeviceTag.device_id).where(DeviceTag.tag == tag)))
    points = _series(session, conditions, drift, start, end, bucket_s)
    return TelemetrySeries(scope="model", subject=name, model_version=version, tag=tag, start=start, end=end,
                           bucket_s=bucket_s, points=points)


def drift_evaluations(session: Session, scope: str | None, subject: str | None, model: str | None,
                      version: int | None, limit: int) -> list[DriftEvaluationPublic]:
    statement = select(DriftEvaluation).order_by(col(DriftEvaluation.bucket_start).desc(),
                                                 col(DriftEvaluation.id)).limit(limit)
    for column, value in ((DriftEvaluation.scope, scope), (DriftEvaluation.subject, subject),
                          (DriftEvaluation.model_name, model), (DriftEvaluation.model_version, version)):
        if value is not None:
            statement = statement.where(column == value)
    return [DriftEvaluationPublic(**row.model_dump(exclude={"id"})) for row in session.exec(statement)]


def fleet_summary(session: Session, now: datetime, range_s: int, ingest: Mapping[str, int]) -> FleetSummary:
    since = now - timedelta(seconds=range_s)
    devices = session.exec(select(func.count()).select_from(Device)).one()
    online = session.exec(select(func.count()).select_from(Device).where(Device.online == True)).one()  # noqa: E712
    reporting: set[str] = set()
    windows = requests = errors = 0
    latency: list[list[int]] = []
    per_model: dict[tuple[str, int], _Bucket] = defaultdict(_Bucket)
    rows = column_rows(session, select_columns(
        W.device_id, W.model_name, W.model_version, W.requests, W.errors, W.latency_counts,
    ).where(col(W.window_start) >= since))
    for device_id, name, version, count, failed, histogram in rows:
        reporting.add(device_id)
        windows += 1
        requests += count
        errors += failed
        latency.append(histogram)
        if name is not None and version is not None:
            bucket = per_model[(name, version)]
            bucket.devices.add(device_id)
            bucket.requests += count
            bucket.errors += failed
            bucket.latency.append(histogram)
    firing = Counter(kind for kind in session.exec(select(Alert.kind).where(Alert.state == AlertState.FIRING.value)))
    models = [ModelInService(name=name, version=version, devices=len(bucket.devices), requests=bucket.requests,
                             error_rate=bucket.errors / bucket.requests if bucket.requests else None,
                             latency_p95_ms=histogram_quantile(merge_latency(bucket.latency), 0.95))
              for (name, version), bucket in sorted(per_model.items())]
    return FleetSummary(
        generated_at=now, range_s=range_s, devices=devices, devices_online=online, devices_reporting=len(reporting),
        windows=windows, requests=requests, errors=errors, error_rate=errors / requests if requests else None,
        latency_p95_ms=histogram_quantile(merge_latency(latency), 0.95), models=models,
        alerts_firing=dict(firing), ingest=dict(ingest),
    )
