"""Telemetry, drift and alert settings (``EDGEFLEET_*`` like every server setting; mixed into
``Settings``), and the typed settings objects the monitor's parts take."""

from pydantic import BaseModel, Field, field_validator

from fleet_server.alerting.alerts import HookTargets
from fleet_server.alerting.delivery import DeliverySettings
from fleet_server.alerting.monitor import MonitorSettings
from fleet_server.alerting.rules import ErrorRateThresholds, LatencyThresholds
from fleet_server.drift.evaluator import DriftSettings
from fleet_server.drift.stats import DriftThresholds, StatisticalTest


class TelemetryConfig(BaseModel):
    telemetry_batch_size: int = Field(default=1000, gt=0, le=100_000)  # windows per ingest transaction
    telemetry_decode_workers: int = Field(default=1, ge=0, le=32)  # processes decoding windows (0: none)
    telemetry_retention_days: int = Field(default=30, gt=0)
    monitor_interval_s: float = Field(default=30.0, gt=0)  # drift, latency, error and offline checks
    drift_bucket_s: int = Field(default=300, gt=0)  # one drift test per subject and bucket
    drift_windows: int = Field(default=6, ge=1, le=1000)  # M buckets in the sliding range
    drift_alert_windows: int = Field(default=3, ge=1)  # N drifted buckets among M raise an alert
    drift_min_samples: int = Field(default=200, ge=1)  # samples a bucket needs to be tested
    drift_alpha: float = Field(default=0.01, gt=0, lt=1)  # false discovery rate across features
    drift_min_psi: float = Field(default=0.2, ge=0)  # effect size a drifted feature needs too
    drift_test: StatisticalTest = StatisticalTest.CHI2  # chi2 or g
    latency_factor: float = Field(default=2.0, gt=1)  # alert when p95 exceeds factor x baseline
    latency_window_s: float = Field(default=300.0, gt=0)
    latency_baseline_s: float = Field(default=3600.0, gt=0)
    latency_min_requests: int = Field(default=50, ge=1)
    error_rate_threshold: float = Field(default=0.05, gt=0, lt=1)
    error_min_requests: int = Field(default=20, ge=1)
    offline_after_s: float = Field(default=180.0, gt=0)  # missed heartbeats (default interval 30 s)
    alert_webhooks: str = ""  # comma-separated URLs that get every alert event
    retrain_webhook: str = ""  # URL called when drift asks for retraining
    retrain_command: str = ""  # command run (payload on stdin) when drift asks for retraining
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_retry_base_s: float = Field(default=2.0, gt=0)
    webhook_retry_max_s: float = Field(default=300.0, gt=0)

    @field_validator("alert_webhooks", "retrain_webhook")
    @classmethod
    def _http_urls(cls, value: str) -> str:
        for url in (part.strip() for part in value.split(",") if part.strip()):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value.strip()

    def drift_settings(self) -> DriftSettings:
        return DriftSettings(self.drift_bucket_s, self.drift_windows, min(self.drift_alert_windows, self.drift_windows),
                             DriftThresholds(self.drift_alpha, self.drift_min_psi, self.drift_min_samples,
                                             self.drift_test))

    def monitor_settings(self) -> MonitorSettings:
        return MonitorSettings(
            interval_s=self.monitor_interval_s, latency_window_s=self.latency_window_s,
            latency_baseline_s=self.latency_baseline_s,
            latency=LatencyThresholds(self.latency_factor, self.latency_min_requests),
            errors=ErrorRateThresholds(self.error_rate_threshold, self.error_min_requests),
            offline_after_s=self.offline_after_s, retention_days=self.telemetry_retention_days,
        )

    def delivery_settings(self) -> DeliverySettings:
        return DeliverySettings(self.webhook_timeout_s, self.webhook_max_attempts, self.webhook_retry_base_s,
                                self.webhook_retry_max_s, self.retrain_command)

    def hook_targets(self) -> HookTargets:
        return HookTargets(tuple(url.strip() for url in self.alert_webhooks.split(",") if url.strip()),
                           self.retrain_webhook or None, bool(self.retrain_command.strip()))
