"""Vectorised binning on a reference profile's edges (numpy).

One rule, used by the compression pipeline to build reference counts and by
the agent's telemetry to count live inputs, so both always agree: for edges
e_0..e_k, bin 0 is underflow (x < e_0), bin i in 1..k is e_{i-1} <= x < e_i
(the last interior bin also takes x == e_k), bin k+1 is overflow (x > e_k).

``FeatureBinner`` applies the rule to every feature of a matrix at once, for
the agent's telemetry buffers (a handful of numpy calls per batch of rows,
whatever the number of features).
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


class FeatureBinner:
    """``bin_counts`` of each column of a samples x features matrix on its own edges, vectorised.

    The edges are padded with NaN to a table [features, max edges]; a value's bin is the number of
    its feature's edges <= it (``searchsorted`` right), computed one edge position at a time across
    all features, so the numpy calls per batch grow with the edges per feature, not the features."""

    def __init__(self, edges: list[np.ndarray]) -> None:
        self.widths = [len(e) + 1 for e in edges]
        self.rows = np.arange(len(edges))  # with ``overflow``: each feature's overflow bin, for fancy indexing
        self.overflow = np.array(self.widths, dtype=np.intp) - 1
        depth = max((len(e) for e in edges), default=0)
        self._table = np.full((depth, len(edges)), np.nan)
        for index, feature_edges in enumerate(edges):
            self._table[: len(feature_edges), index] = feature_edges
        self._last = np.array([e[-1] if len(e) else np.nan for e in edges])
        self._last_bin = np.array([max(len(e) - 1, 0) for e in edges], dtype=np.intp)
        self._offsets = np.arange(len(edges), dtype=np.intp) * (depth + 1)
        self._depth = depth
        self._index_type = np.int8 if depth < 127 else np.int16  # bins 0..depth

    def counts(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(counts [features, max edges + 1]: row f's first ``widths[f]`` are feature f's bins;
        NaNs per feature). ``rows`` is float64 [samples, features]; NaNs are not binned."""
        features = len(self.widths)
        if self._depth > 3 * features:  # few features with many edges: one searchsorted per feature is fewer calls
            return self._counts_per_feature(rows)
        indices = np.zeros(rows.shape, dtype=self._index_type)
        above = np.empty(rows.shape, dtype=bool)
        for edge_row in self._table:  # NaN padding compares False
            np.greater_equal(rows, edge_row, out=above)
            np.add(indices, above, out=indices, casting="unsafe")
        np.copyto(indices, self._last_bin, where=rows == self._last, casting="unsafe")
        flat = indices.astype(np.intp) + self._offsets
        nan = np.isnan(rows)
        binned = np.bincount(flat[~nan] if nan.any() else flat.ravel(), minlength=features * (self._depth + 1))
        return binned.reshape(features, self._depth + 1), nan.sum(axis=0)

    def _counts_per_feature(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        binned = np.zeros((len(self.widths), self._depth + 1), dtype=np.intp)
        for index, width in enumerate(self.widths):
            binned[index, :width] = bin_counts(self._table[: width - 1, index], rows[:, index])
        return binned, np.isnan(rows).sum(axis=0)


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
