"""Per-device health from stored telemetry windows (what rollout health gates compare).

``health_by_device`` sums every window of each device whose ``window_start``
lies in ``[start, end)``: requests, errors, the merged latency histogram (its
95th percentile) and the drift score of the windows' feature counts against
their reference profile (largest Jensen-Shannon divergence, 0..1, of any
feature or the predictions; windows binned on several profiles: the profile
with the most samples). Every requested device gets an entry; no windows
means ``requests == 0`` and no latency or drift.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from agent.protocol.telemetry import LATENCY_EDGES_MS, histogram_quantile
from fleet_server.drift.aggregate import ProfileCounts
from fleet_server.drift.profiles import load_profile
from fleet_server.models.telemetry import TelemetryWindowRecord

LATENCY_BINS = len(LATENCY_EDGES_MS) + 1
QUERY_CHUNK = 500


@dataclass(frozen=True)
class DeviceHealth:
    requests: int
    errors: int
    error_rate: float  # errors / requests; 0.0 without requests
    p95_latency_ms: float | None  # None without a successful request
    drift_score: float | None  # None without feature counts or a stored reference profile


def merge_latency(histograms: Sequence[Sequence[int]]) -> list[int]:
    total = [0] * LATENCY_BINS
    for histogram in histograms:
        if len(histogram) == LATENCY_BINS:
            total = [a + b for a, b in zip(total, histogram, strict=True)]
    return total


def drift_score(session: Session, windows: Sequence[TelemetryWindowRecord]) -> float | None:
    """Largest JS divergence of the windows' counts against their (most used) reference profile."""
    best = profile_counts(session, windows)
    return None if best is None else best.drift_score()


def profile_counts(session: Session, windows: Sequence[TelemetryWindowRecord]) -> ProfileCounts | None:
    """The windows' bin counts summed on their reference profile (the one with the most samples)."""
    by_profile: dict[str, list[TelemetryWindowRecord]] = defaultdict(list)
    for window in windows:
        if window.profile_sha256 and window.feature_counts:
            by_profile[window.profile_sha256].append(window)
    best: ProfileCounts | None = None
    for sha256, group in by_profile.items():
        profile = load_profile(session, sha256)
        if profile is None:
            continue
        counts = ProfileCounts(profile)
        for window in group:
            counts.add(window.feature_counts, window.feature_missing, window.predictions)
        if best is None or counts.samples > best.samples:
            best = counts
    return best


def health_by_device(session: Session, device_ids: list[str], start: datetime,
                     end: datetime) -> dict[str, DeviceHealth]:
    windows: dict[str, list[TelemetryWindowRecord]] = {device_id: [] for device_id in device_ids}
    unique_ids = list(dict.fromkeys(device_ids))
    for offset in range(0, len(unique_ids), QUERY_CHUNK):
        chunk = unique_ids[offset:offset + QUERY_CHUNK]
        statement = select(TelemetryWindowRecord).where(
            col(TelemetryWindowRecord.device_id).in_(chunk),
            TelemetryWindowRecord.window_start >= start,
            TelemetryWindowRecord.window_start < end,
        )
        for window in session.exec(statement):
            windows[window.device_id].append(window)
    result = {}
    for device_id, rows in windows.items():
        requests = sum(row.requests for row in rows)
        errors = sum(row.errors for row in rows)
        result[device_id] = DeviceHealth(
            requests=requests,
            errors=errors,
            error_rate=errors / requests if requests else 0.0,
            p95_latency_ms=histogram_quantile(merge_latency([row.latency_counts for row in rows]), 0.95),
            drift_score=drift_score(session, rows),
        )
    return result
