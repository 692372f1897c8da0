"""Calibration/validation data loaders: .npz, .npy, CSV; shapes, dtypes and labels checked."""

from pathlib import Path

import numpy as np
import pytest

from agent.protocol.metadata import TensorSpec
from compression.data import load_dataset
from compression.errors import DataError

FLAT = (TensorSpec("input", "float32", (None, 64)),)
IMAGE = (TensorSpec("image", "float32", (None, 1, 8, 8)),)
TWO = (TensorSpec("a", "float32", (None, 2)), TensorSpec("b", "int64", (None,)))


def test_npz_by_name_or_single_array_with_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "named.npz", input=np.ones((5, 64)), labels=np.arange(5))
    data = load_dataset(tmp_path / "named.npz", FLAT)
    assert data.rows == 5 and data.inputs["input"].dtype == np.float32 and data.labels.tolist() == [0, 1, 2, 3, 4]
    np.savez(tmp_path / "x.npz", x=np.ones((3, 64), np.float32), y=np.array([1.0, 2.0, 3.0]))
    data = load_dataset(tmp_path / "x.npz", FLAT)
    assert data.labels is not None and data.labels.dtype == np.int64


def test_npz_with_several_inputs(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=np.zeros((4, 2)), b=np.array([1, 2, 3, 4]))
    data = load_dataset(tmp_path / "two.npz", TWO)
    assert data.inputs["b"].dtype == np.int64 and data.row(1)["a"].shape == (1, 2)
    np.savez(tmp_path / "bad.npz", a=np.zeros((4, 2)), c=np.array([1, 2, 3, 4]))
    with pytest.raises(DataError, match=r"do not match the model inputs \['a', 'b'\]"):
        load_dataset(tmp_path / "bad.npz", TWO)
    np.savez(tmp_path / "rows.npz", a=np.zeros((4, 2)), b=np.array([1, 2, 3]))
    with pytest.raises(DataError, match="different row counts"):
        load_dataset(tmp_path / "rows.npz", TWO)
    np.savez(tmp_path / "frac.npz", a=np.zeros((2, 2)), b=np.array([0.5, 1.0]))
    with pytest.raises(DataError, match="non-integer"):
        load_dataset(tmp_path / "frac.npz", TWO)


def test_npy_and_shape_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "img.npy", np.zeros((7, 1, 8, 8), np.float64))
    assert load_dataset(tmp_path / "img.npy", IMAGE).inputs["image"].shape == (7, 1, 8, 8)
    with pytest.raises(DataError, match=r"shape \[7, 1, 8, 8\], the model needs \['N', 64\]"):
        load_dataset(tmp_path / "img.npy", FLAT, "calibration data")
    np.save(tmp_path / "nan.npy", np.full((2, 64), np.nan))
    with pytest.raises(DataError, match="NaN"):
        load_dataset(tmp_path / "nan.npy", FLAT)
    np.save(tmp_path / "empty.npy", np.zeros((0, 64)))
    with pytest.raises(DataError, match="no rows"):
        load_dataset(tmp_path / "empty.npy", FLAT)


def test_csv_with_header_and_label_column_reshaped_to_the_input(tmp_path: Path) -> None:
    rows = ["label," + ",".join(f"p{i}" for i in range(64))]
    rows += [f"{digit}," + ",".join(["0.5"] * 64) for digit in (3, 7)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset(tmp_path / "d.csv", IMAGE)
    assert data.inputs["image"].shape == (2, 1, 8, 8) and data.labels.tolist() == [3, 7]
    (tmp_path / "plain.csv").write_text("1,2\n3,4\n")
    with pytest.raises(DataError, match="2 feature columns, input 'input' needs 64"):
        load_dataset(tmp_path / "plain.csv", FLAT)
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    with pytest.raises(DataError, match="line 2 has 1 columns"):
        load_dataset(tmp_path / "ragged.csv", (TensorSpec("x", "float32", (None, 2)),))
    (tmp_path / "text.csv").write_text("1,2\n3,x\n")
    with pytest.raises(DataError, match="non-numeric"):
        load_dataset(tmp_path / "text.csv", (TensorSpec("x", "float32", (None, 2)),))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(tmp_path / "missing.npz", FLAT)
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="neither .npz, .npy nor UTF-8 CSV"):
        load_dataset(tmp_path / "bin", FLAT)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04truncated")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(tmp_path / "broken.npz", FLAT)
