"""Drift evaluation over a sliding time range, per device and per cohort (model version x tag).

The range is the last ``windows`` (M) time buckets of ``bucket_s`` seconds,
aligned to the epoch, the newest one still filling. Each pass sums the
feature and prediction counts of the stored telemetry windows per subject and
bucket (a window belongs to the bucket its start falls in), tests every
bucket against the reference profile the windows were binned on
(``fleet_server.drift.stats``), upserts one ``drift_evaluation`` row per
subject and bucket, and reports a drift condition for every subject with at
least ``alert_windows`` (N) drifted buckets among the M. Buckets whose sample
count did not change since their stored evaluation are not tested again.

Cohorts: every tag of a device, plus ``*`` (all devices on that model version).
"""

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from fleet_server.alerting.rules import ALL_DEVICES_TAG, COHORT, DEVICE, Condition
from fleet_server.core.db import column_rows, select_columns
from fleet_server.core.types import from_unix, utcnow
from fleet_server.drift.aggregate import ProfileCounts
from fleet_server.drift.profiles import load_profile
from fleet_server.drift.stats import DriftResult, DriftThresholds, n_of_m
from fleet_server.models.alert import AlertKind
from fleet_server.models.device import DeviceTag
from fleet_server.models.drift import DriftEvaluation
from fleet_server.models.telemetry import TelemetryWindowRecord

logger = logging.getLogger(__name__)

EVALUATIONS = DriftEvaluation.__table__  # type: ignore[attr-defined]
UPDATED_COLUMNS = ("profile_sha256", "bucket_end", "evaluated_at", "samples", "sufficient", "drifted", "drift_score",
                   "max_psi", "min_adjusted_p", "drifted_features", "prediction_drift", "details")


@dataclass(frozen=True)
class DriftSettings:
    bucket_s: int = 300
    windows: int = 6  # M buckets in the sliding range
    alert_windows: int = 3  # N drifted buckets among them raise an alert
    thresholds: DriftThresholds = DriftThresholds()


@dataclass(frozen=True)
class Subject:
    scope: str
    subject: str
    model_name: str
    model_version: int
    profile_sha256: str


def _result_row(subject: Subject, start: datetime, end: datetime, result: DriftResult) -> dict[str, Any]:
    return {
        "scope": subject.scope, "subject": subject.subject, "model_name": subject.model_name,
        "model_version": subject.model_version, "profile_sha256": subject.profile_sha256,
        "bucket_start": start, "bucket_end": end, "evaluated_at": utcnow(), "samples": result.samples,
        "sufficient": result.sufficient, "drifted": result.drifted, "drift_score": result.drift_score,
        "max_psi": result.max_psi, "min_adjusted_p": result.min_adjusted_p,
        "drifted_features": result.drifted_features,
        "prediction_drift": bool(result.prediction and result.prediction.drifted),
        "details": {"top": [feature.to_dict() for feature in result.top()]},
    }


class DriftEvaluator:
    def __init__(self, settings: DriftSettings) -> None:
        self.settings = settings

    def range_start(self, now: datetime) -> float:
        bucket = self.settings.bucket_s
        return math.floor(now.timestamp() / bucket) * bucket - (self.settings.windows - 1) * bucket

    def run(self, session: Session, now: datetime) -> list[Condition]:
        """Evaluate every subject with windows in the range; return the drift conditions that hold."""
        first = self.range_start(now)
        buckets = self._collect(session, first)
        previous = self._stored(session, from_unix(first))
        rows, conditions = [], []
        for subject, counts_by_bucket in buckets.items():
            flags = [False] * self.settings.windows
            latest: tuple[int, dict[str, Any]] | None = None
            for index, counts in sorted(counts_by_bucket.items()):
                start = from_unix(first + index * self.settings.bucket_s)
                stored = previous.get((subject, start))
                if stored is not None and stored["samples"] == counts.samples:
                    row = stored  # unchanged since the last pass
                else:
                    row = _result_row(subject, start, from_unix(first + (index + 1) * self.settings.bucket_s),
                                      counts.evaluate(self.settings.thresholds))
                    rows.append(row)
                flags[index] = bool(row["drifted"])
                if row["sufficient"]:
                    latest = (index, row)
            if n_of_m(flags, self.settings.alert_windows, self.settings.windows):
                conditions.append(self._condition(subject, flags, latest))
        if rows:
            self._upsert(session, rows)
        return conditions

    def _collect(self, session: Session, first: float) -> dict[Subject, dict[int, ProfileCounts]]:
        w = TelemetryWindowRecord
        statement = select_columns(
            w.device_id, w.window_start, w.model_name, w.model_version, w.profile_sha256, w.feature_counts,
            w.feature_missing, w.predictions,
        ).where(col(w.window_start) >= from_unix(first), col(w.profile_sha256).is_not(None),
                col(w.model_name).is_not(None))
        windows = column_rows(session, statement)
        tags: dict[str, list[str]] = defaultdict(list)
        device_ids = sorted({window[0] for window in windows})
        for offset in range(0, len(device_ids), 500):
            for device_id, tag in session.exec(select(DeviceTag.device_id, DeviceTag.tag).where(
                    col(DeviceTag.device_id).in_(device_ids[offset:offset + 500]))):
                tags[device_id].append(tag)
        buckets: dict[Subject, dict[int, ProfileCounts]] = defaultdict(dict)
        for device_id, start, name, version, sha256, feature_counts, missing, predictions in windows:
            index = int((start.timestamp() - first) // self.settings.bucket_s)
            profile = load_profile(session, sha256)
            if profile is None or not 0 <= index < self.settings.windows:
                continue
            subjects = [Subject(DEVICE, device_id, name, version, sha256)] + [
                Subject(COHORT, tag, name, version, sha256) for tag in [*tags[device_id], ALL_DEVICES_TAG]]
            for subject in subjects:
                counts = buckets[subject].get(index)
                if counts is None:
                    counts = buckets[subject][index] = ProfileCounts(profile)
                counts.add(feature_counts, missing, predictions)
        return buckets

    @staticmethod
    def _stored(session: Session, first: datetime) -> dict[tuple[Subject, datetime], dict[str, Any]]:
        rows = session.exec(select(DriftEvaluation).where(DriftEvaluation.bucket_start >= first)).all()
        return {(Subject(row.scope, row.subject, row.model_name, row.model_version, row.profile_sha256),
                 row.bucket_start): row.model_dump() for row in rows}

    @staticmethod
    def _upsert(session: Session, rows: list[dict[str, Any]]) -> None:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        statement = dialect.insert(EVALUATIONS)
        statement = statement.on_conflict_do_update(
            index_elements=["scope", "subject", "model_name", "model_version", "bucket_start"],
            set_={name: statement.excluded[name] for name in UPDATED_COLUMNS},
        )
        session.connection().execute(statement, rows)

    def _condition(self, subject: Subject, flags: list[bool], latest: tuple[int, dict[str, Any]] | None) -> Condition:
        where = f"device {subject.subject}" if subject.scope == DEVICE else (
            "all devices" if subject.subject == ALL_DEVICES_TAG else f"devices tagged {subject.subject}")
        drifted = sum(flags)
        details: dict[str, Any] = {
            "drifted_buckets": drifted, "buckets": self.settings.windows, "bucket_s": self.settings.bucket_s,
            "profile_sha256": subject.profile_sha256,
        }
        summary = (f"input drift on {where} running {subject.model_name} v{subject.model_version}: "
                   f"{drifted} of the last {self.settings.windows} buckets drifted")
        if latest is not None:
            row = latest[1]
            details["latest"] = {key: row[key] for key in ("samples", "drift_score", "max_psi", "min_adjusted_p",
                                                           "drifted_features", "prediction_drift")}
            details["latest"]["bucket_start"] = row["bucket_start"].isoformat()
            details["top_features"] = row["details"].get("top", [])
            summary += f" (latest: {row['drifted_features']} features, JS {row['drift_score'] or 0:.3f})"
        return Condition(AlertKind.DRIFT, subject.scope, subject.subject, summary, subject.model_name,
                         subject.model_version, details)
