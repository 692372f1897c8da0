"""What ``/metrics`` exposes: fleet gauges from the database (devices, traffic of the last five
minutes per model version, firing alerts, deliveries, latest cohort drift scores) and the
counters of this server process (MQTT messages and telemetry ingest outcomes)."""

from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlmodel import Session, col, func, select

from fleet_server.alerting.rules import COHORT
from fleet_server.models.alert import AlertDelivery
from fleet_server.models.drift import DriftEvaluation
from fleet_server.services.prometheus import MetricFamily
from fleet_server.services.telemetry_series import fleet_summary

RANGE_S = 300


def collect(session: Session, now: datetime, mqtt_stats: Mapping[str, int], ingest_stats: Mapping[str, int],
            ingest_pending: int, monitor_passes: int) -> list[MetricFamily]:
    summary = fleet_summary(session, now, RANGE_S, ingest_stats)
    devices = MetricFamily("edgefleet_devices", "gauge", "Enrolled devices by presence.")
    devices.add(summary.devices_online, state="online").add(summary.devices - summary.devices_online, state="offline")
    families = [
        devices,
        MetricFamily("edgefleet_devices_reporting", "gauge", "Devices that sent telemetry in the last 5 minutes.")
        .add(summary.devices_reporting),
        MetricFamily("edgefleet_requests_5m", "gauge", "Inference requests reported for the last 5 minutes.")
        .add(summary.requests),
        MetricFamily("edgefleet_errors_5m", "gauge", "Failed inference requests reported for the last 5 minutes.")
        .add(summary.errors),
        MetricFamily("edgefleet_latency_p95_ms", "gauge", "Fleet-wide p95 inference latency, last 5 minutes.")
        .add(summary.latency_p95_ms),
    ]
    model_devices = MetricFamily("edgefleet_model_devices", "gauge", "Devices serving a model version (5 min).")
    model_requests = MetricFamily("edgefleet_model_requests_5m", "gauge", "Requests per model version (5 min).")
    model_errors = MetricFamily("edgefleet_model_error_rate", "gauge", "Error rate per model version (5 min).")
    model_p95 = MetricFamily("edgefleet_model_latency_p95_ms", "gauge", "p95 latency per model version (5 min).")
    for model in summary.models:
        labels = {"model": model.name, "version": model.version}
        model_devices.add(model.devices, **labels)
        model_requests.add(model.requests, **labels)
        model_errors.add(model.error_rate, **labels)
        model_p95.add(model.latency_p95_ms, **labels)
    families += [model_devices, model_requests, model_errors, model_p95]
    alerts = MetricFamily("edgefleet_alerts_firing", "gauge", "Firing alerts by kind.")
    for kind in ("drift", "latency", "error_rate", "offline"):
        alerts.add(summary.alerts_firing.get(kind, 0), kind=kind)
    deliveries = MetricFamily("edgefleet_alert_deliveries", "gauge", "Alert deliveries by state.")
    for state, count in session.exec(select(AlertDelivery.state, func.count()).group_by(AlertDelivery.state)):
        deliveries.add(count, state=state)
    drift = MetricFamily("edgefleet_drift_score", "gauge",
                         "Largest Jensen-Shannon divergence vs the reference, latest bucket per cohort.")
    latest: dict[tuple[str, str, int], float | None] = {}
    for subject, name, version, score in session.exec(select(
            DriftEvaluation.subject, DriftEvaluation.model_name, DriftEvaluation.model_version,
            DriftEvaluation.drift_score).where(DriftEvaluation.scope == COHORT,
                                               DriftEvaluation.bucket_start >= now - timedelta(hours=1))
            .order_by(col(DriftEvaluation.bucket_start))):
        latest[(subject, name, version)] = score
    for (subject, name, version), score in sorted(latest.items()):
        drift.add(score, cohort=subject, model=name, version=version)
    messages = MetricFamily("edgefleet_mqtt_messages_total", "counter", "Device messages by outcome (this process).")
    for outcome, count in sorted(Counter(mqtt_stats).items()):
        messages.add(count, outcome=outcome)
    windows = MetricFamily("edgefleet_telemetry_windows_total", "counter",
                           "Telemetry windows by ingest outcome (this process).")
    for outcome, count in sorted(Counter(ingest_stats).items()):
        windows.add(count, outcome=outcome.removeprefix("telemetry_"))
    families += [alerts, deliveries, drift, messages, windows,
                 MetricFamily("edgefleet_telemetry_ingest_pending", "gauge", "Windows waiting for the writer.")
                 .add(ingest_pending),
                 MetricFamily("edgefleet_monitor_passes_total", "counter", "Monitor passes (this process).")
                 .add(monitor_passes)]
    return families
