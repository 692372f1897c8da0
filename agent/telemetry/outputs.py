"""What a model's outputs say about its predictions, per row: class label and confidence, or a value.

Decided once per model from its output schema (and the reference profile, when
there is one): an integer output holds class labels; a float output of shape
[N, C>=2] holds class scores (confidence = the top score; without a label
output the label is the index of the top score); otherwise the first float
output is a value (regression), its first element per row.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agent.protocol.metadata import TensorSpec
from agent.protocol.profile import PredictionKind, ReferenceProfile

INTEGER_KINDS = ("i", "u", "b")
FLOAT_KINDS = ("f",)


def _kind(spec: TensorSpec) -> str:
    try:
        return np.dtype(spec.dtype).kind
    except TypeError:
        return "O"


@dataclass(frozen=True)
class OutputReader:
    kind: PredictionKind | None  # None: nothing readable
    label_output: str | None = None
    score_output: str | None = None
    value_output: str | None = None

    @classmethod
    def for_model(cls, outputs: Sequence[TensorSpec], profile: ReferenceProfile | None) -> "OutputReader":
        labels = next((spec.name for spec in outputs if _kind(spec) in INTEGER_KINDS), None)
        scores = next((spec.name for spec in outputs if _kind(spec) in FLOAT_KINDS and len(spec.shape) == 2
                       and (spec.shape[1] is None or spec.shape[1] >= 2)), None)
        values = next((spec.name for spec in outputs if _kind(spec) in FLOAT_KINDS), None)
        declared = profile.predictions.kind if profile is not None and profile.predictions is not None else None
        if declared is PredictionKind.VALUES and values is not None:
            return cls(PredictionKind.VALUES, value_output=values)
        if labels is not None or scores is not None:
            return cls(PredictionKind.CLASSES, label_output=labels, score_output=scores)
        if values is not None:
            return cls(PredictionKind.VALUES, value_output=values)
        return cls(None)

    def read(self, outputs: Mapping[str, np.ndarray], rows: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Views, one row per input row: (labels or values, or None to take the top score's index;
        the scores [rows, C], or None). Cheap: no copies, no reductions (the accumulator batches those)."""
        if self.kind is PredictionKind.VALUES:
            assert self.value_output is not None
            return _first_column(outputs.get(self.value_output), rows), None
        if self.kind is PredictionKind.CLASSES:
            scores = outputs.get(self.score_output) if self.score_output else None
            if scores is not None and (scores.ndim != 2 or len(scores) != rows):
                scores = scores.reshape(rows, -1) if scores.size >= 2 * rows and scores.size % rows == 0 else None
            labels = _first_column(outputs.get(self.label_output), rows) if self.label_output else None
            return labels, scores
        return None, None


def _first_column(value: np.ndarray | None, rows: int) -> np.ndarray | None:
    if value is None or value.size < rows or rows == 0:
        return None
    if value.ndim == 1 and len(value) == rows:
        return value
    return value.reshape(rows, -1)[:, 0]
