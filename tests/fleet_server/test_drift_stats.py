"""Drift statistics against known values, and the decision rules."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from fleet_server.drift.stats import (
    PREDICTIONS,
    DriftThresholds,
    StatisticalTest,
    benjamini_hochberg,
    evaluate,
    homogeneity_test,
    js_divergence,
    merge_sparse_bins,
    n_of_m,
    psi,
)


def test_psi_known_value() -> None:
    reference, observed = np.array([50, 50]), np.array([25, 75])
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi(reference, observed) == pytest.approx(expected)
    assert psi(reference, reference * 3) == pytest.approx(0.0)


def test_js_divergence_known_values() -> None:
    assert js_divergence(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    assert js_divergence(np.array([5, 5]), np.array([1, 1])) == pytest.approx(0.0)
    p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    m = (p + q) / 2
    expected = 0.5 * sum(p * np.log2(p / m)) + 0.5 * sum(q * np.log2(q / m))
    assert js_divergence(np.array([50, 50]), np.array([25, 75])) == pytest.approx(expected)
    assert js_divergence(np.array([0, 0]), np.array([1, 1])) == 0.0


def test_chi_square_and_g_test_match_scipy_on_a_2x3_table() -> None:
    reference, observed = np.array([30, 40, 30]), np.array([20, 50, 30])
    table = np.vstack([reference, observed])
    chi2 = scipy_stats.chi2_contingency(table, correction=False)
    g = scipy_stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")
    assert homogeneity_test(reference, observed) == pytest.approx((chi2.statistic, 2, chi2.pvalue))
    assert homogeneity_test(reference, observed, StatisticalTest.G) == pytest.approx((g.statistic, 2, g.pvalue))
    statistic = sum((o - e) ** 2 / e for o, e in zip(table.ravel(), chi2.expected_freq.ravel(), strict=True))
    assert chi2.statistic == pytest.approx(statistic)


def test_sparse_bins_are_merged_and_empty_ones_dropped() -> None:
    reference, observed = merge_sparse_bins(np.array([0, 1, 2, 30, 0, 1, 40, 0]), np.array([0, 0, 1, 25, 0, 0, 38, 2]))
    assert reference.tolist() == [33, 41] and observed.tolist() == [26, 40]
    assert homogeneity_test(np.array([5, 0]), np.array([0, 0]))[2] == 1.0


def test_benjamini_hochberg_known_values() -> None:
    p_values = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005, 0.01, 0.03, 0.04 -> p * m / rank = 0.02, 0.02, 0.04, 0.04 (monotone from the top)
    assert benjamini_hochberg(p_values).tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_evaluate_flags_the_shifted_feature_only() -> None:
    rng = np.random.default_rng(3)
    edges = np.quantile(rng.normal(size=5000), np.linspace(0, 1, 11))
    reference = [np.bincount(np.searchsorted(edges, rng.normal(size=5000), side="right"), minlength=12)
                 for _ in range(4)]
    live = [rng.normal(size=1000) + (1.0 if index == 2 else 0.0) for index in range(4)]
    observed = [np.bincount(np.searchsorted(edges, values, side="right"), minlength=12) for values in live]
    result = evaluate(reference, observed, DriftThresholds(), np.array([500, 500, 0]), np.array([480, 520, 0]))
    assert result.sufficient and result.drifted and result.drifted_features == 1
    assert [feature.index for feature in result.features if feature.drifted] == [2]
    assert result.prediction is not None and result.prediction.index == PREDICTIONS and not result.prediction.drifted
    assert result.drift_score == max(feature.js for feature in result.features)
    assert result.top(1)[0].index == 2


def test_too_few_samples_are_not_tested() -> None:
    result = evaluate([np.array([100, 100])], [np.array([0, 50])], DriftThresholds(min_samples=200))
    assert not result.sufficient and not result.drifted and result.min_adjusted_p is None
    assert result.drift_score is not None and result.drift_score > 0.3  # the effect size is still reported


def test_significance_without_effect_size_is_not_drift() -> None:
    reference, observed = np.array([500_000, 500_000]), np.array([490_000, 510_000])  # tiny shift, huge n
    result = evaluate([reference], [observed], DriftThresholds())
    assert result.features[0].adjusted_p < 1e-6 and not result.drifted


def test_n_of_m() -> None:
    assert n_of_m([True, False, True], 2, 3)
    assert not n_of_m([True, False, False], 2, 3)
    assert not n_of_m([True, True, False, False, False], 2, 3)  # only the last m count
