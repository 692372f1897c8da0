"""Telemetry seen through a rollout: A/B cohorts side by side, and the shadow
candidate's agreement with the served model.

Both read the stored telemetry windows (``telemetry_window``) of the
rollout's devices since it started. A cohort counts only the windows of the
release it was given (so an A/B comparison is never diluted by the model a
device served before); the shadow report counts the windows whose shadow
section names the rollout's candidate, weighting each window by the requests
it compared. ``aggregate_shadow`` is the pure part.
"""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from agent.protocol.telemetry import histogram_quantile
from fleet_server.core.types import utcnow
from fleet_server.models.rollout import Rollout, RolloutDevice
from fleet_server.models.rollout_api import CohortPublic, ShadowPublic
from fleet_server.models.telemetry import TelemetryWindowRecord
from fleet_server.rollouts.service import get_rollout
from fleet_server.rollouts.states import DeviceStatus
from fleet_server.rollouts.views import release_ref
from fleet_server.services.telemetry_query import QUERY_CHUNK, drift_score, merge_latency

TOOK_RELEASE = (DeviceStatus.SUCCEEDED.value, DeviceStatus.ROLLING_BACK.value, DeviceStatus.ROLLED_BACK.value,
                DeviceStatus.ROLLBACK_FAILED.value)


def _windows(session: Session, device_ids: list[str], start: datetime, **filters: Any) -> list[TelemetryWindowRecord]:
    rows: list[TelemetryWindowRecord] = []
    for offset in range(0, len(device_ids), QUERY_CHUNK):
        statement = select(TelemetryWindowRecord).where(
            col(TelemetryWindowRecord.device_id).in_(device_ids[offset:offset + QUERY_CHUNK]),
            TelemetryWindowRecord.window_start >= start)
        for column, value in filters.items():
            statement = statement.where(getattr(TelemetryWindowRecord, column) == value)
        rows.extend(session.exec(statement))
    return rows


def _devices(session: Session, rollout_id: int) -> list[RolloutDevice]:
    return list(session.exec(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id)))


def cohorts(session: Session, rollout_id: int) -> list[CohortPublic]:
    rollout = get_rollout(session, rollout_id)
    rows = _devices(session, rollout_id)
    start = rollout.started_at or rollout.created_at
    result = []
    for cohort, release_id in (("a", rollout.release_id), ("b", rollout.release_b_id)):
        if release_id is None:
            continue
        release = release_ref(session, release_id)
        assert release is not None
        members = [row.device_id for row in rows if row.cohort == cohort]
        windows = _windows(session, members, start, model_name=release.name, model_version=release.version)
        requests = sum(window.requests for window in windows)
        errors = sum(window.errors for window in windows)
        result.append(CohortPublic(
            cohort=cohort, release=release, devices=len(members),
            succeeded=sum(1 for row in rows if row.cohort == cohort and row.status in TOOK_RELEASE),
            requests=requests, errors=errors, error_rate=errors / requests if requests else None,
            p95_latency_ms=histogram_quantile(merge_latency([w.latency_counts for w in windows]), 0.95),
            drift_score=drift_score(session, windows)))
    return result


def aggregate_shadow(sections: Iterable[tuple[str, Mapping[str, Any]]], name: str, version: int) -> dict[str, Any]:
    """Weighted figures of the shadow sections (device id, section) that name candidate ``name`` v``version``."""
    compared = agreed = 0.0
    serving = candidate = diff = 0.0
    diff_weight = 0.0
    reporting: set[str] = set()
    for device_id, section in sections:
        ref = section.get("candidate") or {}
        weight = section.get("compared") or 0
        if ref.get("name") != name or ref.get("version") != version or weight <= 0:
            continue
        reporting.add(device_id)
        compared += weight
        agreed += weight * float(section.get("agreement") or 0.0)
        serving += weight * float(section.get("serving_p50_ms") or 0.0)
        candidate += weight * float(section.get("candidate_p50_ms") or 0.0)
        if section.get("mean_abs_diff") is not None:
            diff += weight * float(section["mean_abs_diff"])
            diff_weight += weight
    return {
        "devices_reporting": len(reporting), "compared": int(compared),
        "agreement": agreed / compared if compared else None,
        "mean_abs_diff": diff / diff_weight if diff_weight else None,
        "serving_p50_ms": serving / compared if compared else None,
        "candidate_p50_ms": candidate / compared if compared else None,
    }


def shadow(session: Session, rollout_id: int) -> ShadowPublic:
    rollout: Rollout = get_rollout(session, rollout_id)
    release = release_ref(session, rollout.release_id)
    assert release is not None
    rows = _devices(session, rollout_id)
    ids = [row.device_id for row in rows]
    windows = [w for w in _windows(session, ids, rollout.started_at or rollout.created_at or utcnow())
               if w.shadow]
    figures = aggregate_shadow(((w.device_id, w.shadow or {}) for w in windows), release.name, release.version)
    running = (DeviceStatus.SUCCEEDED.value, DeviceStatus.ROLLING_BACK.value)
    return ShadowPublic(candidate=release, devices_running=sum(1 for row in rows if row.status in running), **figures)
