"""Merge the bin counts of many telemetry windows, aligned with their reference profile (pure).

Windows binned on one profile add up bin by bin. Prediction classes are
aligned with the profile's class labels plus one "other" bin for labels the
reference never saw (reference count 0 there, so new classes read as drift).
A window whose shapes do not fit the profile is skipped and counted.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.protocol.profile import PredictionKind, ReferenceProfile
from fleet_server.drift.stats import DriftResult, DriftThresholds, evaluate, js_divergence


def reference_predictions(profile: ReferenceProfile) -> np.ndarray | None:
    if profile.predictions is None:
        return None
    counts = np.asarray(profile.predictions.counts, dtype=np.int64)
    return np.append(counts, 0) if profile.predictions.kind is PredictionKind.CLASSES else counts


def align_predictions(profile: ReferenceProfile, predictions: Mapping[str, Any] | None) -> np.ndarray | None:
    """Window prediction counts on the profile's bins; None if they cannot be compared."""
    reference = profile.predictions
    if reference is None or not predictions or predictions.get("kind") != reference.kind.value:
        return None
    counts = predictions.get("counts") or []
    if reference.kind is PredictionKind.VALUES:
        return np.asarray(counts, dtype=np.int64) if len(counts) == len(reference.counts) else None
    index = {label: position for position, label in enumerate(reference.labels_or_edges)}
    aligned = np.zeros(len(reference.labels_or_edges) + 1, dtype=np.int64)
    for label, count in zip(predictions.get("labels") or [], counts, strict=False):
        aligned[index.get(float(label), len(aligned) - 1)] += int(count)
    return aligned


@dataclass
class ProfileCounts:
    """Bin counts of windows binned on one reference profile, summed."""

    profile: ReferenceProfile
    features: list[np.ndarray] = field(init=False)
    missing: np.ndarray = field(init=False)
    predictions: np.ndarray | None = field(init=False)
    windows: int = 0
    skipped: int = 0

    def __post_init__(self) -> None:
        self.features = [np.zeros(len(feature.counts), dtype=np.int64) for feature in self.profile.features]
        self.missing = np.zeros(len(self.profile.features), dtype=np.int64)
        reference = reference_predictions(self.profile)
        self.predictions = None if reference is None else np.zeros_like(reference)

    def add(self, feature_counts: list[list[int]] | None, feature_missing: list[int] | None,
            predictions: Mapping[str, Any] | None) -> bool:
        """Add one window's counts; False (and counted as skipped) if they do not fit the profile."""
        if feature_counts is None or len(feature_counts) != len(self.features) or any(
                len(row) != len(total) for row, total in zip(feature_counts, self.features, strict=True)):
            self.skipped += 1
            return False
        for total, row in zip(self.features, feature_counts, strict=True):
            total += np.asarray(row, dtype=np.int64)
        if feature_missing is not None and len(feature_missing) == len(self.missing):
            self.missing += np.asarray(feature_missing, dtype=np.int64)
        aligned = align_predictions(self.profile, predictions)
        if self.predictions is not None and aligned is not None and len(aligned) == len(self.predictions):
            self.predictions += aligned
        self.windows += 1
        return True

    @property
    def samples(self) -> int:
        """Input rows counted: the most any feature holds (NaNs excluded)."""
        return max((int(total.sum()) for total in self.features), default=0)

    def evaluate(self, thresholds: DriftThresholds) -> DriftResult:
        reference = [np.asarray(feature.counts, dtype=np.int64) for feature in self.profile.features]
        with_predictions = self.predictions is not None and self.predictions.sum() > 0
        return evaluate(reference, self.features, thresholds,
                        reference_predictions(self.profile) if with_predictions else None,
                        self.predictions if with_predictions else None)

    def drift_score(self) -> float | None:
        """The largest JS divergence of any feature or the predictions (no tests; None without samples)."""
        if self.samples == 0:
            return None
        scores = [js_divergence(np.asarray(feature.counts), counts)
                  for feature, counts in zip(self.profile.features, self.features, strict=True)]
        reference = reference_predictions(self.profile)
        if reference is not None and self.predictions is not None and self.predictions.sum() > 0:
            scores.append(js_divergence(reference, self.predictions))
        return max(scores, default=None)
