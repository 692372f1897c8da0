"""The accumulator's pending requests as matrices: inputs as samples x features, outputs as predictions and scores.

Requests are buffered as they come (input copies or bytes, the runtime's output
arrays) and turned into one matrix per kind only when a buffer is binned, so
the per-request cost stays a few appends.
"""

from collections.abc import Mapping

import numpy as np

from agent.protocol.profile import PredictionKind
from agent.telemetry.outputs import OutputReader


def numpy_dtype(name: str) -> np.dtype | None:
    try:
        return np.dtype(name)
    except TypeError:  # "str" and other types numpy does not know: never matched
        return None


def feature_rows(batches: list[np.ndarray], width: int) -> np.ndarray | None:
    """The pending input batches as one float64 matrix of ``width`` features (rows that do not fit are dropped).

    The flattening is ``agent.binning.feature_matrix``'s: each sample's first input, flattened."""
    try:
        stacked = np.concatenate(batches)  # one call when every batch has the same sample shape
        matrices = [stacked.reshape(len(stacked), -1)] if stacked.ndim >= 1 else []
    except ValueError:
        matrices = [batch.reshape(len(batch), -1) for batch in batches if batch.ndim >= 1]
    fitting = [matrix[:, :width] for matrix in matrices if matrix.shape[1] >= width and len(matrix)]
    if not fitting:
        return None
    return np.asarray(np.concatenate(fitting) if len(fitting) > 1 else fitting[0], dtype=np.float64)


def prediction_rows(reader: OutputReader, outputs: list[Mapping[str, np.ndarray]]
                     ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(labels or values, scores) of the pending requests, one row per sample."""
    name = reader.value_output if reader.kind is PredictionKind.VALUES else reader.label_output
    predictions = _stack([output.get(name) for output in outputs], first_column=True) if name else None
    scores = _stack([output.get(reader.score_output) for output in outputs], first_column=False) \
        if reader.kind is PredictionKind.CLASSES and reader.score_output else None
    if scores is not None and (scores.shape[1] < 2 or (predictions is not None and len(predictions) != len(scores))):
        scores = None
    return predictions, scores


def _stack(arrays: list[np.ndarray | None], first_column: bool) -> np.ndarray | None:
    present = [array for array in arrays if array is not None and array.ndim >= 1 and len(array)]
    if not present:
        return None
    try:
        stacked = np.concatenate(present)
    except ValueError:  # shapes differ between requests: row by row
        rows = [array.reshape(len(array), -1) for array in present]
        width = min(row.shape[1] for row in rows)
        stacked = np.concatenate([row[:, :width] for row in rows])
    stacked = stacked.reshape(len(stacked), -1)
    return np.asarray(stacked[:, 0] if first_column else stacked, dtype=np.float64)
