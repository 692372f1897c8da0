"""Builders for telemetry tests: windows drawn from (or shifted away from) a reference profile."""

import numpy as np

from agent.binning import bin_counts, build_profile
from agent.protocol.profile import ReferenceProfile
from agent.protocol.telemetry import LATENCY_EDGES_MS, FeatureCounts, ModelRef, PredictionCounts, TelemetryWindow

FEATURES = 8
DEFAULT_MODEL = ModelRef("tele-model", 1)


def reference_data(seed: int = 1, rows: int = 4000) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, FEATURES))


def make_profile(seed: int = 1) -> ReferenceProfile:
    data = reference_data(seed)
    return build_profile(data, (data[:, 0] > 0).astype(np.int64), "input", classes=True)


def make_window(device_id: str, seq: int, start: float, profile: ReferenceProfile | None = None,
                model: ModelRef | None = DEFAULT_MODEL, rows: int = 300, shift: float = 0.0,
                latency_ms: float = 1.0, errors: int = 0, seed: int | None = None,
                duration: float = 1.0) -> TelemetryWindow:
    rng = np.random.default_rng(seq if seed is None else seed)
    data = rng.normal(size=(rows, FEATURES)) + shift
    latencies = np.full(rows - errors, latency_ms) * rng.uniform(0.9, 1.1, rows - errors)
    features = predictions = None
    if profile is not None:
        features = FeatureCounts(profile.sha256(), tuple(
            tuple(int(c) for c in bin_counts(np.asarray(feature.edges), data[:, index]))
            for index, feature in enumerate(profile.features)), (0,) * len(profile.features))
        positives = int((data[:, 0] > 0).sum())
        predictions = PredictionCounts(profile.predictions.kind, (0.0, 1.0), (rows - positives, positives)) \
            if profile.predictions is not None else None
    return TelemetryWindow(
        device_id=device_id, seq=seq, start=start, end=start + duration, model=model, requests=rows, errors=errors,
        latency_ms=tuple(int(c) for c in bin_counts(np.asarray(LATENCY_EDGES_MS), latencies)),
        features=features, predictions=predictions,
    )
