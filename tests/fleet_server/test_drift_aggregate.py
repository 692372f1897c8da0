"""Summing window counts on a reference profile: class alignment, misfits skipped, scores."""

import numpy as np

from agent.binning import build_profile
from fleet_server.drift.aggregate import ProfileCounts, align_predictions
from fleet_server.drift.stats import DriftThresholds


def profile():  # type: ignore[no-untyped-def]
    data = np.random.default_rng(0).normal(size=(1000, 3))
    return build_profile(data, np.where(data[:, 0] > 0, 7, 2), "input", classes=True)


def test_classes_align_with_the_profile_and_unknown_labels_go_to_other() -> None:
    reference = profile()
    aligned = align_predictions(reference, {"kind": "classes", "labels": [2.0, 5.0, 7.0], "counts": [10, 3, 20]})
    assert aligned is not None and aligned.tolist() == [10, 20, 3]  # labels 2, 7, then "other"
    assert align_predictions(reference, {"kind": "values", "labels": [], "counts": [1]}) is None


def test_windows_add_up_and_misfits_are_skipped() -> None:
    reference = profile()
    counts = ProfileCounts(reference)
    rows = [list(feature.counts) for feature in reference.features]
    assert counts.add(rows, [1, 0, 0], None)
    assert counts.add(rows, None, None)
    assert not counts.add(rows[:2], None, None)
    assert not counts.add([row[:-1] for row in rows], None, None)
    assert (counts.windows, counts.skipped) == (2, 2)
    assert counts.samples == 2 * 1000 and counts.missing.tolist() == [1, 0, 0]
    assert counts.drift_score() is not None and counts.drift_score() < 1e-9  # exactly the reference
    result = counts.evaluate(DriftThresholds(min_samples=1))
    assert not result.drifted
    assert counts.drift_score() == result.drift_score
