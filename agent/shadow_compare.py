"""How a shadow candidate's answers compare with the served model's. Pure.

A model is treated as a classifier when it has an integer output (a label per
row) or when its first float output holds one probability row per sample (2-D,
values in [0, 1], rows summing to 1). Classifiers are compared on top-1: the
label, else the arg-max of the probabilities. Anything else is compared by
the mean absolute difference of the first output, element by element; a row
of such an output "agrees" when all its elements are within ``rtol``/``atol``
of the served answer, so every model also gets an agreement share in [0, 1].
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from agent.errors import ShadowError

PROBABILITY_TOLERANCE = 1e-3
RTOL = 1e-3
ATOL = 1e-4


@dataclass(frozen=True)
class Comparison:
    samples: int  # rows compared (the batch size)
    classifier: bool
    agreed: int = 0  # rows with the same top-1 answer (classifiers) or within tolerance (others)
    abs_diff_sum: float = 0.0  # regression: sum of |serving - candidate| over all elements
    elements: int = 0  # regression: elements compared


def _label_output(outputs: Mapping[str, np.ndarray]) -> str | None:
    for name, value in outputs.items():
        if np.asarray(value).dtype.kind in "iu" and np.asarray(value).ndim >= 1:
            return name
    return None


def _is_probability_rows(value: np.ndarray) -> bool:
    if value.ndim != 2 or value.shape[1] < 2 or value.dtype.kind != "f" or value.size == 0:
        return False
    if np.any(value < -PROBABILITY_TOLERANCE) or np.any(value > 1 + PROBABILITY_TOLERANCE):
        return False
    return bool(np.all(np.abs(value.sum(axis=1) - 1.0) <= PROBABILITY_TOLERANCE * value.shape[1]))


def _top1(outputs: Mapping[str, np.ndarray], label: str | None, first: str) -> np.ndarray:
    if label is not None:
        return np.asarray(outputs[label]).reshape(len(outputs[label]), -1)[:, 0]
    return np.asarray(outputs[first]).argmax(axis=1)


def compare_outputs(serving: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> Comparison:
    """Compare one request's answers; the serving model's outputs decide how."""
    if not serving:
        raise ShadowError("the serving model returned no outputs")
    first = next(iter(serving))
    label = _label_output(serving)
    if label is not None or _is_probability_rows(np.asarray(serving[first])):
        key = label if label is not None else first
        if key not in candidate:
            raise ShadowError(f"the candidate has no output {key!r}")
        mine, theirs = _top1(serving, label, first), _top1(candidate, label, first)
        if mine.shape != theirs.shape:
            raise ShadowError(f"top-1 answers have shapes {mine.shape} and {theirs.shape}")
        return Comparison(samples=len(mine), classifier=True, agreed=int(np.sum(mine == theirs)))
    if first not in candidate:
        raise ShadowError(f"the candidate has no output {first!r}")
    mine_f = np.asarray(serving[first], dtype=np.float64)
    theirs_f = np.asarray(candidate[first], dtype=np.float64)
    if mine_f.shape != theirs_f.shape:
        raise ShadowError(f"output {first!r} has shapes {mine_f.shape} and {theirs_f.shape}")
    rows_mine = mine_f.reshape(mine_f.shape[0], -1) if mine_f.ndim else mine_f.reshape(1, 1)
    rows_theirs = theirs_f.reshape(rows_mine.shape)
    close = np.isclose(rows_theirs, rows_mine, rtol=RTOL, atol=ATOL).all(axis=1)
    return Comparison(samples=len(rows_mine), classifier=False, agreed=int(close.sum()),
                      abs_diff_sum=float(np.abs(mine_f - theirs_f).sum()), elements=int(mine_f.size))


@dataclass
class Agreement:
    """Comparisons accumulated over a telemetry window."""

    compared: int = 0
    agreed: int = 0
    classifier: bool | None = None
    abs_diff_sum: float = 0.0
    elements: int = 0

    def add(self, comparison: Comparison) -> None:
        self.compared += comparison.samples
        self.classifier = comparison.classifier if self.classifier is None else self.classifier
        self.agreed += comparison.agreed
        self.abs_diff_sum += comparison.abs_diff_sum
        self.elements += comparison.elements

    @property
    def agreement(self) -> float | None:
        """Share of compared rows that agreed (top-1 for classifiers, within tolerance otherwise)."""
        return self.agreed / self.compared if self.compared else None

    @property
    def mean_abs_diff(self) -> float | None:
        """Mean absolute difference per output element (non-classifiers only)."""
        if self.classifier or not self.elements:
            return None
        return self.abs_diff_sum / self.elements
