"""Bad inputs give one clear error each and leave nothing behind."""

import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compression import (
    DataError,
    InvalidModelError,
    UnknownVariantError,
    UnsupportedModelError,
    compress_to_directory,
)
from compression.errors import CompressionError
from compression.settings import CompressionSettings
from tests.compression.conftest import FAST


def assert_nothing_left(parent: Path, name: str = "out") -> None:
    assert [path.name for path in parent.iterdir() if path.name.startswith(f".{name}") or path.name == name] == []


def custom_op_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    graph = helper.make_graph([helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_calibration_of_the_wrong_shape(mlp_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "wrong.npz"
    np.savez(data, input=np.zeros((10, 32), np.float32))
    with pytest.raises(DataError, match=r"shape \[10, 32\], the model needs \['N', 64\]") as caught:
        compress_to_directory(mlp_model, data, tmp_path / "out", settings=FAST)
    assert "calibration data" in str(caught.value) and caught.value.hint
    assert_nothing_left(tmp_path)


def test_a_non_model_file(mlp_data: tuple[Path, Path], tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("these are not the weights you are looking for\n" * 20)
    with pytest.raises(InvalidModelError, match="notes.onnx is not an ONNX, TFLite or Keras model"):
        compress_to_directory(text, mlp_data[0], tmp_path / "out", settings=FAST)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InvalidModelError, match="empty"):
        compress_to_directory(empty, mlp_data[0], tmp_path / "out", settings=FAST)
    assert_nothing_left(tmp_path)


def test_a_model_with_unsupported_ops(mlp_data: tuple[Path, Path], tmp_path: Path) -> None:
    model = custom_op_model(tmp_path / "custom.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((8, 4), np.float32))
    with pytest.raises(UnsupportedModelError, match="onnxruntime cannot run custom.onnx") as caught:
        compress_to_directory(model, data, tmp_path / "out", settings=FAST)
    assert "\n" not in str(caught.value)
    assert_nothing_left(tmp_path)


def test_unknown_or_inapplicable_variants(mlp_model: Path, mlp_data: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(UnknownVariantError, match="unknown variants \\['onnx-int4'\\]"):
        compress_to_directory(mlp_model, mlp_data[0], tmp_path / "out",
                              settings=CompressionSettings(variants=("onnx-int4",)))
    with pytest.raises(UnknownVariantError, match="do not apply to a onnx model"):
        compress_to_directory(mlp_model, mlp_data[0], tmp_path / "out",
                              settings=CompressionSettings(variants=("tflite-int8",)))
    assert_nothing_left(tmp_path)


def test_output_directory_must_be_new(mlp_model: Path, mlp_data: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(CompressionError, match="not empty"):
        compress_to_directory(mlp_model, mlp_data[0], tmp_path / "out", settings=FAST)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_pickled_data_is_refused(mlp_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.npy"
    data.write_bytes(b"\x93NUMPY" + pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="not a readable .npy"):
        compress_to_directory(mlp_model, data, tmp_path / "out", settings=FAST)
