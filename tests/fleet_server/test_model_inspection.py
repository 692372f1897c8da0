"""Recognising real ONNX/TFLite models and refusing everything else."""

import pickle
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agent.protocol import Runtime, TensorSpec
from fleet_server.errors import InvalidModelFileError
from fleet_server.services.model_inspection import inspect_model_file
from tests.fleet_server.conftest import ONNX_FIXTURE, TFLITE_FIXTURE, build_onnx_model


def test_onnx_schema(tmp_path: Path) -> None:
    info = inspect_model_file(build_onnx_model(tmp_path / "add.onnx"))
    assert (info.format, info.runtime) == ("onnx", Runtime.ONNXRUNTIME)
    assert info.inputs == (TensorSpec("x", "float32", (None, 4)),)  # the initializer is not an input
    assert info.outputs == (TensorSpec("y", "float32", (None, 4)),)


def test_fixture_models() -> None:
    onnx_info = inspect_model_file(ONNX_FIXTURE)
    assert [spec.dtype for spec in onnx_info.outputs] == ["int64", "float32"]
    tflite_info = inspect_model_file(TFLITE_FIXTURE)
    assert (tflite_info.format, tflite_info.runtime) == ("tflite", Runtime.TFLITE)
    assert tflite_info.inputs[0].shape == (None, 64) and tflite_info.inputs[0].dtype == "float32"


def sequence_output_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("SequenceConstruct", ["x"], ["seq"])], "g", [x], [seq])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\x7fELF\x02\x01\x01\x00" + bytes(64), "ELF"),
        (pickle.dumps([1, 2, 3]), "pickle"),
        (b"PK\x03\x04" + bytes(64), "zip"),
        (b"\x00\x00\x00\x00TFL3" + bytes(64), "TFLite"),
        (bytes(range(256)) * 4, "ONNX"),
        (ONNX_FIXTURE.read_bytes()[:2000], "ONNX"),
        (TFLITE_FIXTURE.read_bytes()[:3000], "TFLite"),
    ],
    ids=["empty", "elf", "pickle", "zip", "fake-tflite", "garbage", "truncated-onnx", "truncated-tflite"],
)
def test_non_models_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(content)
    with pytest.raises(InvalidModelFileError, match=message):
        inspect_model_file(path)


def test_non_tensor_outputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFileError, match="not a tensor"):
        inspect_model_file(sequence_output_model(tmp_path / "seq.onnx"))


def test_external_data_is_refused(tmp_path: Path) -> None:
    model = onnx.load(build_onnx_model(tmp_path / "add.onnx"))
    weights = numpy_helper.to_array(model.graph.initializer[0])
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weights, "one"))  # raw_data, externalisable
    onnx.save(model, tmp_path / "external.onnx", save_as_external_data=True, size_threshold=0,
              location="weights.bin")
    with pytest.raises(InvalidModelFileError, match="external data"):
        inspect_model_file(tmp_path / "external.onnx")
