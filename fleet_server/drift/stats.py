"""Drift statistics: pure functions of bin counts (numpy + scipy, no I/O).

Per feature, the live counts are tested against the reference counts with a
two-sample chi-square (or G-) test of homogeneity on the 2 x bins table, so
the finite size of the calibration sample is accounted for; bins empty on
both sides are dropped and sparse neighbours merged until every merged bin
holds ``MIN_BIN_COUNT`` samples. The p-values of all features (and of the
prediction distribution) are corrected together with Benjamini-Hochberg.

Significance alone flags negligible shifts once samples are many, so a
feature drifts only if its adjusted p-value is below ``alpha`` AND its
population stability index reaches ``min_psi``. Jensen-Shannon divergence
(base 2, 0..1) is the reported effect size; ``drift_score`` is its largest
value over features and predictions. A bucket with fewer than
``min_samples`` samples is not tested, and an alert needs ``n`` drifted
buckets among the last ``m`` (``n_of_m``).
"""

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.special import rel_entr

MIN_BIN_COUNT = 5
PSI_EPSILON = 1e-4
PREDICTIONS = -1  # FeatureDrift.index of the prediction distribution


class StatisticalTest(enum.StrEnum):
    CHI2 = "chi2"
    G = "g"


@dataclass(frozen=True)
class DriftThresholds:
    alpha: float = 0.01  # false discovery rate across features (Benjamini-Hochberg)
    min_psi: float = 0.2  # effect size a feature needs on top of significance
    min_samples: int = 200  # samples a bucket needs to be tested at all
    method: StatisticalTest = StatisticalTest.CHI2


@dataclass(frozen=True)
class FeatureDrift:
    index: int  # feature index, or PREDICTIONS
    statistic: float
    dof: int
    p_value: float
    adjusted_p: float
    psi: float
    js: float
    drifted: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return {"index": self.index, "statistic": round(self.statistic, 4), "dof": self.dof,
                "p_value": self.p_value, "adjusted_p": self.adjusted_p, "psi": round(self.psi, 6),
                "js": round(self.js, 6), "drifted": self.drifted}


@dataclass(frozen=True)
class DriftResult:
    samples: int
    sufficient: bool
    drifted: bool
    drift_score: float | None  # largest JS divergence of any feature or of the predictions
    max_psi: float | None
    min_adjusted_p: float | None
    features: tuple[FeatureDrift, ...]
    prediction: FeatureDrift | None

    @property
    def drifted_features(self) -> int:
        return sum(1 for feature in self.features if feature.drifted)

    def top(self, limit: int = 5) -> list[FeatureDrift]:
        """The most drifted features (by JS divergence), predictions included."""
        tested = [*self.features, *([self.prediction] if self.prediction else [])]
        return sorted(tested, key=lambda feature: (feature.drifted, feature.js), reverse=True)[:limit]


def _proportions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts, dtype=np.float64)


def js_divergence(reference: np.ndarray, observed: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two count vectors; 0 if either is empty."""
    ref, obs = np.asarray(reference, np.float64), np.asarray(observed, np.float64)
    if ref.sum() <= 0 or obs.sum() <= 0:
        return 0.0
    p, q = _proportions(ref), _proportions(obs)
    m = (p + q) / 2
    value = 0.5 * (rel_entr(p, m).sum() + rel_entr(q, m).sum()) / np.log(2)
    return float(min(1.0, max(0.0, value)))


def psi(reference: np.ndarray, observed: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index sum((o - r) * ln(o / r)) over bins, empty bins floored at ``epsilon``."""
    ref, obs = np.asarray(reference, np.float64), np.asarray(observed, np.float64)
    if ref.sum() <= 0 or obs.sum() <= 0:
        return 0.0
    p, q = np.maximum(_proportions(ref), epsilon), np.maximum(_proportions(obs), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def merge_sparse_bins(reference: np.ndarray, observed: np.ndarray,
                      min_count: int = MIN_BIN_COUNT) -> tuple[np.ndarray, np.ndarray]:
    """Drop bins empty on both sides; merge adjacent bins until each merged bin holds >= ``min_count``."""
    ref, obs = np.asarray(reference, np.int64), np.asarray(observed, np.int64)
    keep = (ref + obs) > 0
    ref, obs = ref[keep], obs[keep]
    groups: list[list[int]] = []
    pending = [0, 0]
    for r, o in zip(ref.tolist(), obs.tolist(), strict=True):
        pending = [pending[0] + r, pending[1] + o]
        if sum(pending) >= min_count:
            groups.append(pending)
            pending = [0, 0]
    if sum(pending) > 0:
        if groups:
            groups[-1] = [groups[-1][0] + pending[0], groups[-1][1] + pending[1]]
        else:
            groups.append(pending)
    merged = np.array(groups, dtype=np.int64).reshape(-1, 2)
    return merged[:, 0], merged[:, 1]


def homogeneity_test(reference: np.ndarray, observed: np.ndarray,
                     method: StatisticalTest = StatisticalTest.CHI2) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, p-value) of the two-sample test; (0, 0, 1) when untestable."""
    ref, obs = merge_sparse_bins(reference, observed)
    if len(ref) < 2 or ref.sum() == 0 or obs.sum() == 0:
        return 0.0, 0, 1.0
    lambda_ = "log-likelihood" if method is StatisticalTest.G else None
    result = stats.chi2_contingency(np.vstack([ref, obs]), correction=False, lambda_=lambda_)
    return float(result.statistic), int(result.dof), float(result.pvalue)


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), in the input order."""
    values = np.asarray(p_values, dtype=np.float64)
    if values.size == 0:
        return values
    return np.asarray(stats.false_discovery_control(values, method="bh"), dtype=np.float64)


def evaluate(reference_features: Sequence[np.ndarray], observed_features: Sequence[np.ndarray],
             thresholds: DriftThresholds, reference_predictions: np.ndarray | None = None,
             observed_predictions: np.ndarray | None = None) -> DriftResult:
    """Test every feature (and the predictions) of one bucket against the reference."""
    if len(reference_features) != len(observed_features):
        raise ValueError("reference and observed must list the same features")
    pairs = [(np.asarray(r), np.asarray(o)) for r, o in zip(reference_features, observed_features, strict=True)]
    with_predictions = reference_predictions is not None and observed_predictions is not None
    if with_predictions:
        pairs.append((np.asarray(reference_predictions), np.asarray(observed_predictions)))
    samples = max((int(obs.sum()) for _, obs in pairs), default=0)
    sufficient = samples >= thresholds.min_samples
    tests = [homogeneity_test(ref, obs, thresholds.method) if sufficient else (0.0, 0, 1.0) for ref, obs in pairs]
    adjusted = benjamini_hochberg([p for _, _, p in tests]) if sufficient else np.ones(len(pairs))
    results = []
    for index, ((ref, obs), (statistic, dof, p_value), adjusted_p) in enumerate(
            zip(pairs, tests, adjusted.tolist(), strict=True)):
        effect = psi(ref, obs)
        results.append(FeatureDrift(
            index=PREDICTIONS if with_predictions and index == len(pairs) - 1 else index,
            statistic=statistic, dof=dof, p_value=p_value, adjusted_p=float(adjusted_p), psi=effect,
            js=js_divergence(ref, obs),
            drifted=sufficient and adjusted_p < thresholds.alpha and effect >= thresholds.min_psi,
        ))
    prediction = results.pop() if with_predictions else None
    tested = [*results, *([prediction] if prediction else [])]
    observed_any = samples > 0 and bool(tested)
    return DriftResult(
        samples=samples,
        sufficient=sufficient,
        drifted=any(feature.drifted for feature in tested),
        drift_score=max(feature.js for feature in tested) if observed_any else None,
        max_psi=max(feature.psi for feature in tested) if observed_any else None,
        min_adjusted_p=min(feature.adjusted_p for feature in tested) if sufficient and tested else None,
        features=tuple(results),
        prediction=prediction,
    )


def n_of_m(flags: Sequence[bool], n: int, m: int) -> bool:
    """True when at least ``n`` of the last ``m`` flags (oldest first) are set."""
    return sum(1 for flag in list(flags)[-m:] if flag) >= n
