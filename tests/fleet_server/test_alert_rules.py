"""The pure alert rules: thresholds and reconciliation."""

from datetime import UTC, datetime, timedelta

from fleet_server.alerting.rules import (
    Condition,
    ErrorRateThresholds,
    LatencyThresholds,
    error_rate_condition,
    latency_condition,
    offline_condition,
    reconcile,
)
from fleet_server.models.alert import AlertKind


def test_latency_needs_a_baseline_enough_requests_and_the_factor() -> None:
    limits = LatencyThresholds(factor=2.0, min_requests=50)
    assert latency_condition("d", 5.0, 100, 2.0, 100, limits) is not None
    assert latency_condition("d", 4.0, 100, 2.0, 100, limits) is None  # exactly 2x is not above
    assert latency_condition("d", 5.0, 10, 2.0, 100, limits) is None
    assert latency_condition("d", 5.0, 100, None, 0, limits) is None


def test_error_rate() -> None:
    limits = ErrorRateThresholds(rate=0.05, min_requests=20)
    condition = error_rate_condition("d", 6, 100, limits)
    assert condition is not None and condition.details["error_rate"] == 0.06
    assert error_rate_condition("d", 5, 100, limits) is None
    assert error_rate_condition("d", 10, 19, limits) is None


def test_offline_after_missed_heartbeats() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert offline_condition("d", now - timedelta(seconds=181), now, 180) is not None
    assert offline_condition("d", now - timedelta(seconds=60), now, 180) is None
    assert offline_condition("d", None, now, 180) is None  # never seen: nothing to miss


def test_reconcile_opens_refreshes_and_resolves() -> None:
    keep = Condition(AlertKind.OFFLINE, "device", "a", "gone")
    new = Condition(AlertKind.DRIFT, "cohort", "line-1", "drift", "m", 2)
    plan = reconcile({keep.key: 1, "offline|device|b|-": 2}, [keep, new])
    assert plan.open == [new] and plan.refresh == [(1, keep)] and plan.resolve == [2]
    assert new.key != Condition(AlertKind.DRIFT, "cohort", "line-1", "drift", "m", 3).key
