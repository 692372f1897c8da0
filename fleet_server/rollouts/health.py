"""Health gates: is a device worse on the new release than it was before the
rollout? Pure: two telemetry summaries and the criteria in, a verdict out.

Each device is compared with its own pre-rollout baseline (the telemetry
windows before the rollout started) on three figures: the inference error
rate (absolute increase), the p95 latency (ratio, beyond an absolute floor of
``min_latency_increase_ms``) and the drift score (the
largest Jensen-Shannon divergence against the release's reference profile).
A device is judged only once its post-install windows hold ``min_requests``
requests; a figure missing on either side is not judged (a device without a
baseline counts as 0 % errors before).
"""

from dataclasses import dataclass
from typing import Protocol


class HealthFigures(Protocol):
    """What ``fleet_server.services.telemetry_query.DeviceHealth`` provides."""

    @property
    def requests(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def error_rate(self) -> float: ...
    @property
    def p95_latency_ms(self) -> float | None: ...
    @property
    def drift_score(self) -> float | None: ...


@dataclass(frozen=True)
class Criteria:
    """When a running rollout stops by itself (and, with ``auto_rollback``, is rolled back)."""

    max_failure_rate: float = 0.1  # failed installs / devices released to so far
    max_error_rate_increase: float = 0.05  # absolute: 0.05 = 5 percentage points more errors
    max_latency_ratio: float = 1.5  # p95 after / p95 before, and ...
    min_latency_increase_ms: float = 5.0  # ... at least this much slower (sub-millisecond p95s are mostly noise)
    max_drift_score: float | None = None  # JS divergence 0..1; None: drift is not a gate
    min_requests: int = 20  # a device is judged once it served this many requests on the release
    max_unhealthy_share: float = 0.1  # share of judged devices that may regress before the rollout aborts
    auto_rollback: bool = True


@dataclass(frozen=True)
class HealthSample:
    baseline: HealthFigures | None  # before the rollout
    current: HealthFigures | None  # since the device installed the release


def judged(sample: HealthSample, criteria: Criteria) -> bool:
    """Enough post-install traffic to judge the device."""
    return sample.current is not None and sample.current.requests >= criteria.min_requests


def regression(sample: HealthSample, criteria: Criteria) -> str | None:
    """Why the device regressed (None: healthy, or not enough traffic to tell)."""
    if not judged(sample, criteria):
        return None
    current, baseline = sample.current, sample.baseline
    assert current is not None
    before = baseline.error_rate if baseline is not None and baseline.requests else 0.0
    if current.error_rate - before > criteria.max_error_rate_increase:
        return (f"error rate {before:.1%} -> {current.error_rate:.1%} "
                f"({current.errors} of {current.requests} requests; limit +{criteria.max_error_rate_increase:.1%})")
    if baseline is not None and baseline.p95_latency_ms and current.p95_latency_ms is not None:
        ratio = current.p95_latency_ms / baseline.p95_latency_ms
        slower = current.p95_latency_ms - baseline.p95_latency_ms
        if ratio > criteria.max_latency_ratio and slower > criteria.min_latency_increase_ms:
            return (f"p95 latency {baseline.p95_latency_ms:.1f} ms -> {current.p95_latency_ms:.1f} ms "
                    f"(x{ratio:.2f}; limit x{criteria.max_latency_ratio:.2f} "
                    f"and +{criteria.min_latency_increase_ms:g} ms)")
    if criteria.max_drift_score is not None and current.drift_score is not None:
        before_drift = baseline.drift_score if baseline is not None else None
        if current.drift_score > criteria.max_drift_score and (
            before_drift is None or before_drift <= criteria.max_drift_score
        ):
            return f"drift score {current.drift_score:.3f} (limit {criteria.max_drift_score:.3f})"
    return None
