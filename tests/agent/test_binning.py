"""``FeatureBinner`` (all features at once, for the agent's telemetry buffers) counts exactly as the shared
per-feature rule ``bin_counts``: ties with edges, the last edge, NaN, infinities, constant features."""

import numpy as np
import pytest

from agent.binning import FeatureBinner, bin_counts, decile_edges


def random_edges(rng: np.random.Generator, features: int, edges: int | None) -> list[np.ndarray]:
    if edges is None:  # deciles, as compression builds them
        return [decile_edges(rng.normal(size=300)) for _ in range(features)]
    return [np.sort(rng.normal(size=edges)) for _ in range(features)]


@pytest.mark.parametrize(("features", "edges"), [(64, None), (5, 3), (1, 1), (3, 200)])
def test_counts_match_the_per_feature_rule(features: int, edges: int | None) -> None:
    rng = np.random.default_rng(features)
    table = random_edges(rng, features, edges)
    table[0] = np.array([0.5, 0.5])  # a constant feature
    rows = rng.normal(size=(300, features)) * 1.5
    rows[0, 0] = 0.5
    rows[1, -1] = table[-1][-1]  # exactly the last edge: the last interior bin
    rows[2, -1] = table[-1][0]  # exactly the first edge
    rows[3, 0], rows[4, -1], rows[5, -1] = np.nan, np.inf, -np.inf
    binner = FeatureBinner(table)
    counts, nan = binner.counts(rows)
    for index, feature_edges in enumerate(table):
        width = binner.widths[index]
        assert width == len(feature_edges) + 1
        assert counts[index, :width].tolist() == bin_counts(feature_edges, rows[:, index]).tolist()
        assert counts[index, width:].sum() == 0
    assert nan.tolist() == [1] + [0] * (features - 1)
    assert counts[binner.rows, binner.overflow].tolist() == [int(c[w - 1]) for c, w in zip(counts, binner.widths,
                                                                                           strict=True)]


def test_a_batch_without_rows_counts_nothing() -> None:
    binner = FeatureBinner([np.array([0.0, 1.0]), np.array([2.0])])
    counts, nan = binner.counts(np.empty((0, 2)))
    assert counts.sum() == 0 and nan.tolist() == [0, 0]
