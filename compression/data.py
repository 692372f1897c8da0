"""Calibration and validation data: ``.npz``, ``.npy`` or CSV, checked against the model's inputs.

- ``.npz``: one array per model input, named after it (a single-input model
  also accepts one unnamed array such as ``x``); labels under ``labels``
  (or ``label``, ``y``, ``targets``).
- ``.npy``: one array, the single input; no labels.
- CSV: numeric columns, an optional header; a column named ``label`` (or
  ``labels``, ``y``, ``target``) holds the labels, the other columns are
  reshaped to the single input's fixed dimensions.

The format is recognised from the content (zip, ``\\x93NUMPY`` magic, else
text), so server uploads need no file name. Pickled arrays are refused.
"""

import csv
import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.protocol.metadata import TensorSpec
from compression.errors import DataError, short_message

LABEL_KEYS = ("labels", "label", "y", "targets", "target")
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
MAX_CSV_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class DataSet:
    inputs: dict[str, np.ndarray]  # input name -> [rows, ...], in the model's dtype
    labels: np.ndarray | None  # [rows] integers, or None

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))

    def head(self, rows: int) -> "DataSet":
        """The first ``rows`` rows (all when fewer)."""
        return DataSet({name: array[:rows] for name, array in self.inputs.items()},
                       None if self.labels is None else self.labels[:rows])

    def row(self, index: int) -> dict[str, np.ndarray]:
        return {name: array[index:index + 1] for name, array in self.inputs.items()}


def load_dataset(path: Path, inputs: tuple[TensorSpec, ...], what: str = "data") -> DataSet:
    """Read ``path`` and fit it to the model ``inputs``; one ``DataError`` names what is wrong."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise DataError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from None
    if not head:
        raise DataError(f"the {what} file {path.name} is empty")
    if head.startswith(ZIP_MAGIC):
        arrays = _read_npz(path, what)
    elif head.startswith(NPY_MAGIC):
        arrays = {"": _read_npy(path, what)}
    else:
        arrays = _read_csv(path, inputs, what)
    return fit_arrays(arrays, inputs, what)


def _read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: np.asarray(archive[name]) for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"the {what} file {path.name} is not a readable .npz archive of numeric arrays: "
                        f"{short_message(exc)}") from None


def _read_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"the {what} file {path.name} is not a readable .npy array: {short_message(exc)}") from None


def _read_csv(path: Path, inputs: tuple[TensorSpec, ...], what: str) -> dict[str, np.ndarray]:
    if len(inputs) != 1:
        raise DataError(f"CSV {what} works for single-input models only; this model has {len(inputs)} inputs: "
                        "use .npz with one array per input name")
    if path.stat().st_size > MAX_CSV_BYTES:
        raise DataError(f"the {what} CSV {path.name} is larger than {MAX_CSV_BYTES >> 20} MiB: use .npz")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"the {what} file {path.name} is neither .npz, .npy nor UTF-8 CSV text") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"the {what} CSV {path.name} has no rows")
    header: list[str] | None = None
    if not _numeric(rows[0]):
        header = [cell.strip().lower() for cell in rows[0]]
        rows = rows[1:]
    width = len(header) if header is not None else len(rows[0]) if rows else 0
    values = []
    for number, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise DataError(f"the {what} CSV {path.name} line {number} has {len(row)} columns, expected {width}")
        try:
            values.append([float(cell) for cell in row])
        except ValueError:
            raise DataError(f"the {what} CSV {path.name} line {number} has a non-numeric value") from None
    if not values:
        raise DataError(f"the {what} CSV {path.name} has a header but no rows")
    matrix = np.asarray(values, dtype=np.float64)
    arrays: dict[str, np.ndarray] = {}
    label_column = next((header.index(key) for key in LABEL_KEYS if header and key in header), None)
    if label_column is not None:
        arrays["labels"] = matrix[:, label_column]
        matrix = np.delete(matrix, label_column, axis=1)
    spec = inputs[0]
    fixed = spec.shape[1:]
    if fixed and all(dim is not None for dim in fixed):
        size = math.prod(dim for dim in fixed if dim is not None)
        if matrix.shape[1] != size:
            raise DataError(f"the {what} CSV {path.name} has {matrix.shape[1]} feature columns, input "
                            f"{spec.name!r} needs {size} (shape {list(spec.shape)})")
        matrix = matrix.reshape((len(matrix), *fixed))  # type: ignore[arg-type]
    arrays[spec.name] = matrix
    return arrays


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def fit_arrays(arrays: dict[str, np.ndarray], inputs: tuple[TensorSpec, ...], what: str) -> DataSet:
    """Match named arrays to the model inputs, check shapes, cast dtypes, split off labels."""
    arrays = dict(arrays)
    label_key = next((key for key in LABEL_KEYS if key in arrays), None)
    labels = arrays.pop(label_key) if label_key is not None else None
    names = {spec.name for spec in inputs}
    if len(inputs) == 1 and inputs[0].name not in arrays:
        if len(arrays) != 1:
            raise DataError(f"the {what} holds arrays {sorted(arrays)}; the model's input is {inputs[0].name!r}: "
                            f"name the array {inputs[0].name!r}")
        arrays = {inputs[0].name: next(iter(arrays.values()))}
    missing, unknown = names - set(arrays), set(arrays) - names
    if missing or unknown:
        raise DataError(f"the {what} arrays {sorted(arrays)} do not match the model inputs {sorted(names)}")
    fitted = {spec.name: _fit_input(arrays[spec.name], spec, what) for spec in inputs}
    rows = {len(array) for array in fitted.values()}
    if len(rows) != 1:
        raise DataError(f"the {what} inputs have different row counts {sorted(rows)}")
    count = rows.pop()
    if count == 0:
        raise DataError(f"the {what} has no rows")
    return DataSet(fitted, None if labels is None else _fit_labels(labels, count, what))


def _fit_input(array: np.ndarray, spec: TensorSpec, what: str) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise DataError(f"the {what} for input {spec.name!r} has dtype {array.dtype}, not a numeric type")
    expected = list(spec.shape)
    if array.ndim != len(expected) or any(dim is not None and index > 0 and dim != actual
                                          for index, (dim, actual) in enumerate(zip(expected, array.shape,
                                                                                    strict=True))):
        shown = ["N" if dim is None else dim for dim in expected]
        raise DataError(f"the {what} for input {spec.name!r} has shape {list(array.shape)}, the model needs "
                        f"{shown} (rows first)")
    dtype = np.dtype(spec.dtype)
    if dtype.kind in "iub" and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise DataError(f"the {what} for integer input {spec.name!r} holds non-integer values")
    if dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise DataError(f"the {what} for input {spec.name!r} holds NaN or infinite values")
    return np.ascontiguousarray(array.astype(dtype, copy=False))


def _fit_labels(labels: np.ndarray, rows: int, what: str) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1) if np.asarray(labels).ndim == 2 and labels.shape[1] == 1 else labels
    if labels.ndim != 1 or len(labels) != rows:
        raise DataError(f"the {what} labels have shape {list(labels.shape)}, expected [{rows}] (one per row)")
    if labels.dtype.kind not in "biuf" or not np.all(np.isfinite(labels)):
        raise DataError(f"the {what} labels must be finite numbers (class ids, or targets for a regression model)")
    if labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0):
        return labels.astype(np.int64)
    return labels.astype(np.int64 if labels.dtype.kind in "biu" else np.float64)
