"""Health gates: each device against its own pre-rollout baseline."""

from dataclasses import dataclass

from fleet_server.rollouts.health import Criteria, HealthSample, judged, regression


@dataclass(frozen=True)
class Health:
    requests: int
    errors: int = 0
    p95_latency_ms: float | None = 4.0
    drift_score: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


CRITERIA = Criteria(max_error_rate_increase=0.05, max_latency_ratio=1.5, max_drift_score=0.3, min_requests=20)


def test_too_little_traffic_is_not_judged() -> None:
    sample = HealthSample(Health(100), Health(19, 19))
    assert not judged(sample, CRITERIA) and regression(sample, CRITERIA) is None
    assert regression(HealthSample(Health(100), None), CRITERIA) is None


def test_error_rate_increase() -> None:
    assert regression(HealthSample(Health(100, 2), Health(100, 6)), CRITERIA) is None
    why = regression(HealthSample(Health(100, 2), Health(100, 8)), CRITERIA)
    assert why is not None and why.startswith("error rate 2.0% -> 8.0%")
    assert regression(HealthSample(None, Health(100, 6)), CRITERIA) is not None  # no baseline: 0 % before


def test_latency_ratio_needs_both_sides_and_a_real_slowdown() -> None:
    assert regression(HealthSample(Health(100, p95_latency_ms=40.0), Health(100, p95_latency_ms=59.0)),
                      CRITERIA) is None
    assert "x1.75" in (regression(HealthSample(Health(100, p95_latency_ms=40.0), Health(100, p95_latency_ms=70.0)),
                                  CRITERIA) or "")
    assert regression(HealthSample(None, Health(100, p95_latency_ms=700.0)), CRITERIA) is None
    # 0.2 ms -> 2.9 ms is x14, but only 2.7 ms: scheduling noise, not a regression
    assert regression(HealthSample(Health(100, p95_latency_ms=0.2), Health(100, p95_latency_ms=2.9)), CRITERIA) is None


def test_drift_counts_only_when_the_rollout_made_it_cross_the_limit() -> None:
    assert "drift score 0.400" in (regression(HealthSample(Health(100, drift_score=0.1),
                                                           Health(100, drift_score=0.4)), CRITERIA) or "")
    assert regression(HealthSample(Health(100, drift_score=0.5), Health(100, drift_score=0.6)), CRITERIA) is None
    assert regression(HealthSample(Health(100), Health(100, drift_score=0.9)), Criteria()) is None  # off by default
