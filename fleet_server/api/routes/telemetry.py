"""Telemetry queries: time series per device and per model version or cohort, drift
evaluations, the fleet summary (read-only, viewer role)."""

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from fleet_server.api.deps import RuntimeDep, SessionDep, ViewerDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.core.types import utcnow
from fleet_server.models.common import NAME_PATTERN, TAG_PATTERN
from fleet_server.models.telemetry_api import DriftEvaluationPublic, FleetSummary, TelemetrySeries
from fleet_server.services import telemetry_series

router = APIRouter(prefix="/telemetry", tags=["telemetry"], responses=ERROR_RESPONSES)

DEFAULT_RANGE = timedelta(hours=1)
StartQuery = Annotated[datetime | None, Query(description="Range start (ISO 8601; default: end - 1 h)")]
EndQuery = Annotated[datetime | None, Query(description="Range end (ISO 8601; default: now)")]
BucketQuery = Annotated[int, Query(ge=1, le=86400, description="Seconds per point")]


def _range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    end = _aware(end) if end is not None else utcnow()
    return (_aware(start) if start is not None else end - DEFAULT_RANGE), end


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=utcnow().tzinfo)


@router.get("/devices/{device_id}", response_model=TelemetrySeries)
def device_telemetry(device_id: str, session: SessionDep, _viewer: ViewerDep, start: StartQuery = None,
                     end: EndQuery = None, bucket_s: BucketQuery = 60) -> TelemetrySeries:
    """Requests, errors, latency percentiles, drift scores and system metrics of one device over time."""
    first, last = _range(start, end)
    return telemetry_series.device_series(session, device_id, first, last, bucket_s)


@router.get("/models/{name}", response_model=TelemetrySeries)
def model_telemetry(
    name: str, session: SessionDep, _viewer: ViewerDep,
    version: Annotated[int | None, Query(ge=1)] = None,
    tag: Annotated[str | None, Query(pattern=f"^{TAG_PATTERN}$", description="Cohort: devices with this tag")]
    = None, start: StartQuery = None, end: EndQuery = None, bucket_s: BucketQuery = 60,
) -> TelemetrySeries:
    """One model (a version of it, a cohort of devices) over time, all its devices together."""
    first, last = _range(start, end)
    return telemetry_series.model_series(session, name, version, tag, first, last, bucket_s)


@router.get("/drift", response_model=list[DriftEvaluationPublic])
def drift(session: SessionDep, _viewer: ViewerDep,
          scope: Annotated[str | None, Query(pattern="^(device|cohort)$")] = None,
          subject: Annotated[str | None, Query(max_length=255, description="Device id, or a cohort's tag ('*': all)")]
          = None, model: Annotated[str | None, Query(pattern=f"^{NAME_PATTERN}$")] = None,
          version: Annotated[int | None, Query(ge=1)] = None,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DriftEvaluationPublic]:
    """Drift evaluations, newest bucket first, with the most drifted features of each."""
    return telemetry_series.drift_evaluations(session, scope, subject, model, version, limit)


@router.get("/summary", response_model=FleetSummary)
def summary(runtime: RuntimeDep, session: SessionDep, _viewer: ViewerDep,
            range_s: Annotated[int, Query(ge=60, le=7 * 86400)] = 3600) -> FleetSummary:
    """Fleet-wide figures over the last ``range_s`` seconds, firing alerts, ingest counters."""
    ingest = runtime.bridge.telemetry.stats if runtime.bridge.telemetry is not None else {}
    return telemetry_series.fleet_summary(session, utcnow(), range_s, dict(ingest))
