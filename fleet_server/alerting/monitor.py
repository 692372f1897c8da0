"""The monitor: every ``interval_s`` it evaluates drift (per device and cohort), latency
regression and error rate (per device, from telemetry windows) and missed heartbeats,
turns the conditions that hold into alerts (``AlertBook``), wakes the delivery worker,
and prunes telemetry and drift evaluations older than the retention.

Every pass starts from the stored data, so a restarted server, or a second
replica, reaches the same alerts (the alert table's unique active key keeps
them single).
"""

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete
from sqlmodel import Session, col, select

from agent.protocol.telemetry import histogram_quantile
from fleet_server.alerting.alerts import AlertBook
from fleet_server.alerting.delivery import DeliveryWorker
from fleet_server.alerting.rules import (
    Condition,
    ErrorRateThresholds,
    LatencyThresholds,
    error_rate_condition,
    latency_condition,
    offline_condition,
)
from fleet_server.core.db import column_rows, select_columns, write_session
from fleet_server.core.types import utcnow
from fleet_server.drift.evaluator import DriftEvaluator
from fleet_server.models.device import Device
from fleet_server.models.drift import DriftEvaluation
from fleet_server.models.telemetry import TelemetryWindowRecord
from fleet_server.services.telemetry_query import merge_latency

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorSettings:
    interval_s: float = 30.0
    latency_window_s: float = 300.0  # the recent range compared with the baseline before it
    latency_baseline_s: float = 3600.0
    latency: LatencyThresholds = LatencyThresholds()
    errors: ErrorRateThresholds = ErrorRateThresholds()
    offline_after_s: float = 180.0
    retention_days: int = 30


@dataclass
class _Traffic:
    requests: int = 0
    errors: int = 0
    histograms: list[list[int]] | None = None

    def add(self, requests: int, errors: int, latency: list[int]) -> None:
        self.requests += requests
        self.errors += errors
        self.histograms = (self.histograms or []) + [latency]

    @property
    def p95(self) -> float | None:
        return histogram_quantile(merge_latency(self.histograms or []), 0.95)


class Monitor:
    def __init__(self, engine: Engine, settings: MonitorSettings, drift: DriftEvaluator, alerts: AlertBook,
                 delivery: DeliveryWorker | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.drift = drift
        self.alerts = alerts
        self.delivery = delivery
        self.passes = 0
        self.last_pass_at: datetime | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.delivery is not None:
            self.delivery.start()
        self._thread = threading.Thread(target=self._loop, name="edgefleet-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        if self.delivery is not None:
            self.delivery.stop()

    def _loop(self) -> None:
        while not self._stopping.wait(self.settings.interval_s):
            try:
                self.run_once()
            except Exception:  # a bad pass must not end monitoring
                logger.exception("server event=monitor_pass_failed")

    def run_once(self, now: datetime | None = None) -> list[Condition]:
        """One pass; returns the conditions that hold."""
        now = now or utcnow()
        with write_session(self.engine) as session:
            conditions = self.drift.run(session, now)
        with Session(self.engine, expire_on_commit=False) as session:
            conditions += self._traffic_conditions(session, now)
            conditions += self._offline_conditions(session, now)
        with Session(self.engine, expire_on_commit=False) as session:
            self.alerts.apply(session, conditions, now)
        if self.delivery is not None:
            self.delivery.wake()
        if self.passes % 100 == 0:
            self._prune(now)
        self.passes += 1
        self.last_pass_at = now
        return conditions

    def _traffic_conditions(self, session: Session, now: datetime) -> list[Condition]:
        recent_from = now - timedelta(seconds=self.settings.latency_window_s)
        baseline_from = recent_from - timedelta(seconds=self.settings.latency_baseline_s)
        recent: dict[str, _Traffic] = defaultdict(_Traffic)
        baseline: dict[str, _Traffic] = defaultdict(_Traffic)
        w = TelemetryWindowRecord
        rows = column_rows(session, select_columns(
            w.device_id, w.window_start, w.requests, w.errors, w.latency_counts,
        ).where(col(w.window_start) >= baseline_from, col(w.window_start) <= now))
        for device_id, start, requests, errors, latency in rows:
            (recent if start >= recent_from else baseline)[device_id].add(requests, errors, latency)
        conditions = []
        for device_id, traffic in sorted(recent.items()):
            before = baseline.get(device_id, _Traffic())
            found = [
                error_rate_condition(device_id, traffic.errors, traffic.requests, self.settings.errors),
                latency_condition(device_id, traffic.p95, traffic.requests - traffic.errors, before.p95,
                                  before.requests - before.errors, self.settings.latency),
            ]
            conditions += [condition for condition in found if condition is not None]
        return conditions

    def _offline_conditions(self, session: Session, now: datetime) -> list[Condition]:
        rows = session.exec(select(Device.device_id, Device.last_seen).where(col(Device.last_seen).is_not(None)))
        found = [offline_condition(device_id, last_seen, now, self.settings.offline_after_s)
                 for device_id, last_seen in rows]
        return [condition for condition in found if condition is not None]

    def _prune(self, now: datetime) -> None:
        cutoff = now - timedelta(days=self.settings.retention_days)
        with write_session(self.engine) as session:
            windows = session.connection().execute(delete(TelemetryWindowRecord.__table__).where(  # type: ignore[attr-defined]
                TelemetryWindowRecord.__table__.c.window_start < cutoff)).rowcount  # type: ignore[attr-defined]
            evaluations = session.connection().execute(delete(DriftEvaluation.__table__).where(  # type: ignore[attr-defined]
                DriftEvaluation.__table__.c.bucket_start < cutoff)).rowcount  # type: ignore[attr-defined]
        if windows or evaluations:
            logger.info("server event=telemetry_pruned windows=%d drift_evaluations=%d before=%s", windows,
                        evaluations, cutoff.isoformat())
