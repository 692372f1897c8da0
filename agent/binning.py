"""Vectorised binning on a reference profile's edges (numpy).

One rule, used by the compression pipeline to build reference counts and by
the agent's telemetry to count live inputs, so both always agree: for edges
e_0..e_k, bin 0 is underflow (x < e_0), bin i in 1..k is e_{i-1} <= x < e_i
(the last interior bin also takes x == e_k), bin k+1 is overflow (x > e_k).
"""

import numpy as np

from agent.protocol.profile import (
    MAX_PROFILE_FEATURES,
    FeatureProfile,
    PredictionKind,
    PredictionProfile,
    ReferenceProfile,
)

DECILES = np.linspace(0.0, 1.0, 11)


def bin_indices(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin index of every value (NaNs map to the overflow bin; count them separately)."""
    indices = np.searchsorted(edges, values, side="right")
    indices[values == edges[-1]] = len(edges) - 1
    return indices


def bin_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts per bin, ``len(edges) + 1`` of them, ignoring NaNs."""
    finite = values[~np.isnan(values)]
    return np.bincount(bin_indices(edges, finite), minlength=len(edges) + 1)


def feature_matrix(inputs: np.ndarray) -> np.ndarray:
    """Samples x features: the first input flattened per sample, capped at MAX_PROFILE_FEATURES."""
    matrix = np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1)
    return matrix[:, :MAX_PROFILE_FEATURES]


def decile_edges(values: np.ndarray) -> np.ndarray:
    """Distinct decile edges; a constant feature gets [v, v] so v lands in an interior bin."""
    edges = np.unique(np.quantile(values, DECILES)) if values.size else np.array([0.0])
    return np.repeat(edges, 2) if len(edges) == 1 else edges


def build_profile(inputs: np.ndarray, predictions: np.ndarray, input_name: str, classes: bool) -> ReferenceProfile:
    """Decile edges and reference counts per feature, plus the prediction distribution."""
    matrix = feature_matrix(inputs)
    features = []
    for index in range(matrix.shape[1]):
        column = matrix[:, index][~np.isnan(matrix[:, index])]
        edges = decile_edges(column)
        features.append(FeatureProfile(index, tuple(float(e) for e in edges),
                                       tuple(int(c) for c in bin_counts(edges, column))))
    predictions = np.asarray(predictions)
    if classes:
        labels, counts = np.unique(predictions.astype(np.int64).ravel(), return_counts=True)
        prediction_profile = PredictionProfile(PredictionKind.CLASSES, tuple(float(v) for v in labels),
                                               tuple(int(c) for c in counts))
    else:
        values = predictions.astype(np.float64).ravel()
        edges = decile_edges(values)
        prediction_profile = PredictionProfile(PredictionKind.VALUES, tuple(float(e) for e in edges),
                                               tuple(int(c) for c in bin_counts(edges, values)))
    return ReferenceProfile(input_name, tuple(features), prediction_profile, samples=len(matrix))
