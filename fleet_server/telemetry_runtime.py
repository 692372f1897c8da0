"""Build the server's telemetry parts from the settings: the ingest writer behind the MQTT
bridge and the monitor (drift, latency, errors, heartbeats -> alerts -> webhooks)."""

from sqlalchemy import Engine

from fleet_server.alerting.alerts import AlertBook
from fleet_server.alerting.delivery import DeliveryWorker
from fleet_server.alerting.monitor import Monitor
from fleet_server.core.config import Settings
from fleet_server.drift.evaluator import DriftEvaluator
from fleet_server.mqtt.telemetry_ingest import TelemetryIngestor
from fleet_server.services.artifact_store import ArtifactStore
from fleet_server.services.telemetry_store import TelemetryStore


def build_telemetry(settings: Settings, engine: Engine, artifacts: ArtifactStore) -> tuple[TelemetryIngestor, Monitor]:
    ingestor = TelemetryIngestor(TelemetryStore(engine, artifacts), settings.telemetry_batch_size,
                                 decode_workers=settings.telemetry_decode_workers)
    targets = settings.hook_targets()
    delivery = DeliveryWorker(engine, settings.delivery_settings()) if targets.webhooks or targets.retrain else None
    monitor = Monitor(engine, settings.monitor_settings(), DriftEvaluator(settings.drift_settings()),
                      AlertBook(targets), delivery)
    return ingestor, monitor
