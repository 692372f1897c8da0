"""Alert conditions and how they change the set of firing alerts (pure: no I/O, no clock).

Every monitor pass evaluates every condition from scratch; ``reconcile`` then
compares the conditions that hold with the alerts that fire: new conditions
open alerts, held ones refresh theirs, and firing alerts whose condition no
longer holds resolve. A condition is identified by its ``key`` (kind, scope,
subject and, for drift, the model version), which is also the firing alert's
``active_key``.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleet_server.models.alert import AlertKind

DEVICE = "device"
COHORT = "cohort"
ALL_DEVICES_TAG = "*"  # the cohort of every device running a model version


@dataclass(frozen=True)
class Condition:
    kind: AlertKind
    scope: str
    subject: str
    summary: str
    model_name: str | None = None
    model_version: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        model = f"{self.model_name}:{self.model_version}" if self.model_name else "-"
        return f"{self.kind.value}|{self.scope}|{self.subject}|{model}"


@dataclass(frozen=True)
class AlertPlan:
    open: list[Condition]
    refresh: list[tuple[int, Condition]]  # (alert id, condition still holding)
    resolve: list[int]  # alert ids


def reconcile(firing: Mapping[str, int], conditions: Sequence[Condition]) -> AlertPlan:
    """``firing``: active key -> alert id. Returns what to open, refresh and resolve."""
    holding = {condition.key: condition for condition in conditions}
    return AlertPlan(
        open=[condition for key, condition in holding.items() if key not in firing],
        refresh=[(firing[key], condition) for key, condition in holding.items() if key in firing],
        resolve=[alert_id for key, alert_id in firing.items() if key not in holding],
    )


@dataclass(frozen=True)
class LatencyThresholds:
    factor: float = 2.0  # recent p95 above factor x baseline p95
    min_requests: int = 50  # in both the recent and the baseline range


def latency_condition(device_id: str, recent_p95: float | None, recent_requests: int, baseline_p95: float | None,
                      baseline_requests: int, thresholds: LatencyThresholds) -> Condition | None:
    if (recent_p95 is None or baseline_p95 is None or baseline_p95 <= 0
            or min(recent_requests, baseline_requests) < thresholds.min_requests
            or recent_p95 <= thresholds.factor * baseline_p95):
        return None
    return Condition(AlertKind.LATENCY, DEVICE, device_id,
                     f"p95 latency {recent_p95:.2f} ms is {recent_p95 / baseline_p95:.1f}x its baseline "
                     f"{baseline_p95:.2f} ms",
                     details={"p95_ms": round(recent_p95, 4), "baseline_p95_ms": round(baseline_p95, 4),
                              "requests": recent_requests, "baseline_requests": baseline_requests,
                              "factor": thresholds.factor})


@dataclass(frozen=True)
class ErrorRateThresholds:
    rate: float = 0.05
    min_requests: int = 20


def error_rate_condition(device_id: str, errors: int, requests: int,
                         thresholds: ErrorRateThresholds) -> Condition | None:
    if requests < thresholds.min_requests or errors / requests <= thresholds.rate:
        return None
    return Condition(AlertKind.ERROR_RATE, DEVICE, device_id,
                     f"error rate {errors / requests:.1%} ({errors} of {requests} requests) is above "
                     f"{thresholds.rate:.1%}",
                     details={"errors": errors, "requests": requests, "error_rate": round(errors / requests, 6),
                              "threshold": thresholds.rate})


def offline_condition(device_id: str, last_seen: datetime | None, now: datetime,
                      offline_after_s: float) -> Condition | None:
    """A device seen before whose heartbeats stopped for ``offline_after_s``."""
    if last_seen is None:
        return None
    silent = (now - last_seen).total_seconds()
    if silent <= offline_after_s:
        return None
    return Condition(AlertKind.OFFLINE, DEVICE, device_id,
                     f"no heartbeat for {silent:.0f} s (limit {offline_after_s:.0f} s)",
                     details={"last_seen": last_seen.isoformat(), "silent_s": round(silent, 1)})
