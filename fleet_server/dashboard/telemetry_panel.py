"""The device page's telemetry: latency and traffic charts from the stored
telemetry windows, drift per feature of those windows against their reference
profile, and the drift score the evaluator recorded over time."""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup
from sqlmodel import Session, col, select

from fleet_server.dashboard.charts import Bar, Series, bar_chart, line_chart
from fleet_server.drift.stats import PREDICTIONS, DriftResult, DriftThresholds
from fleet_server.models.drift import DriftEvaluation
from fleet_server.models.telemetry import TelemetryWindowRecord
from fleet_server.services import telemetry_query

PANEL_HOURS = 6
MAX_WINDOWS = 2000
MAX_POINTS = 180
TOP_FEATURES = 12


@dataclass(frozen=True)
class Point:
    """One chart point: windows merged into a time bucket."""

    at: float  # unix seconds (bucket start)
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class TelemetryPanel:
    hours: int
    windows: int
    requests: int
    errors: int
    model: str | None
    latency_chart: Markup
    traffic_chart: Markup
    drift_chart: Markup | None
    drift_history: Markup | None
    drift: DriftResult | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def _weighted(values: Sequence[tuple[float | None, int]]) -> float | None:
    known = [(value, max(weight, 1)) for value, weight in values if value is not None]
    if not known:
        return None
    return sum(value * weight for value, weight in known) / sum(weight for _, weight in known)


def downsample(windows: Sequence[TelemetryWindowRecord], max_points: int = MAX_POINTS) -> list[Point]:
    """Windows in time order merged into at most ``max_points`` equal time buckets (latency weighted by
    requests: an approximation of the merged percentile that is good enough for a chart)."""
    if not windows:
        return []
    first, last = windows[0].window_start.timestamp(), windows[-1].window_start.timestamp()
    width = max((last - first) / max_points, 1e-9)
    buckets: dict[int, list[TelemetryWindowRecord]] = defaultdict(list)
    for window in windows:
        buckets[min(int((window.window_start.timestamp() - first) / width), max_points - 1)].append(window)
    points = []
    for index in sorted(buckets):
        group = buckets[index]
        points.append(Point(
            at=group[0].window_start.timestamp(),
            requests=sum(window.requests for window in group),
            errors=sum(window.errors for window in group),
            p50_ms=_weighted([(window.latency_p50_ms, window.requests) for window in group]),
            p95_ms=_weighted([(window.latency_p95_ms, window.requests) for window in group]),
        ))
    return points


def feature_drift(session: Session, windows: Sequence[TelemetryWindowRecord]) -> DriftResult | None:
    """The windows' bin counts against their (most used) reference profile, per feature."""
    counts = telemetry_query.profile_counts(session, windows)
    if counts is None or counts.samples == 0:
        return None
    return counts.evaluate(DriftThresholds(min_samples=1))


def drift_bars(result: DriftResult) -> Markup:
    tested = [*result.features, *([result.prediction] if result.prediction else [])]
    top = sorted(tested, key=lambda feature: feature.js, reverse=True)[:TOP_FEATURES]
    bars = [Bar("predictions" if feature.index == PREDICTIONS else f"feature {feature.index}", feature.js,
                css_class="bar bad" if feature.drifted else "bar", note=f"· PSI {feature.psi:.2f}")
            for feature in top]
    return bar_chart(bars, f"Drift per feature (Jensen-Shannon, top {len(bars)} of {len(tested)})", width=560,
                     max_value=max(0.05, max((bar.value for bar in bars), default=0)),
                     value_format=lambda value: f"JS {value:.2f}")


def device_panel(session: Session, device_id: str, now: datetime, hours: int = PANEL_HOURS) -> TelemetryPanel | None:
    since = now - timedelta(hours=hours)
    windows = list(reversed(session.exec(
        select(TelemetryWindowRecord)
        .where(TelemetryWindowRecord.device_id == device_id, col(TelemetryWindowRecord.window_start) >= since)
        .order_by(col(TelemetryWindowRecord.window_start).desc()).limit(MAX_WINDOWS)
    ).all()))
    if not windows:
        return None
    points = downsample(windows)
    latency = line_chart([Series("p50", [(p.at, p.p50_ms) for p in points]),
                          Series("p95", [(p.at, p.p95_ms) for p in points], css_class="s1")],
                         title=f"Inference latency, last {hours} h", unit=" ms")
    traffic = line_chart([Series("requests", [(p.at, float(p.requests)) for p in points], css_class="s0"),
                          Series("errors", [(p.at, float(p.errors)) for p in points], css_class="s2")],
                         title="Requests and errors per window")
    evaluations = session.exec(
        select(DriftEvaluation)
        .where(DriftEvaluation.scope == "device", DriftEvaluation.subject == device_id,
               col(DriftEvaluation.bucket_start) >= since)
        .order_by(col(DriftEvaluation.bucket_start))
    ).all()
    history = None if not evaluations else line_chart(
        [Series("drift score", [(row.bucket_start.timestamp(), row.drift_score) for row in evaluations],
                css_class="s2")], title="Drift score (evaluator buckets)")
    drift = feature_drift(session, windows)
    latest = windows[-1]
    return TelemetryPanel(
        hours=hours, windows=len(windows), requests=sum(w.requests for w in windows),
        errors=sum(w.errors for w in windows),
        model=None if latest.model_name is None else f"{latest.model_name} v{latest.model_version}",
        latency_chart=latency, traffic_chart=traffic, drift_chart=None if drift is None else drift_bars(drift),
        drift_history=history, drift=drift,
    )
