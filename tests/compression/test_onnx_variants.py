"""Every ONNX variant builds from a small model, loads in onnxruntime and passes the gate."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from agent.protocol.profile import ReferenceProfile
from agent.runtimes import load_model
from compression import compress_to_directory
from compression.pipeline import PROFILE_FILE, REPORT_FILE
from tests.compression.conftest import FAST, FIXTURES

ONNX_VARIANTS = ["onnx-fp32", "onnx-fp16", "onnx-int8-dynamic", "onnx-int8-static"]


@pytest.fixture(scope="module")
def mlp_result(mlp_model: Path, mlp_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    calibration, validation = mlp_data
    return compress_to_directory(mlp_model, calibration, tmp_path_factory.mktemp("mlp") / "out",
                                 validation=validation, settings=FAST)


@pytest.fixture(scope="module")
def conv_result(conv_model: Path, image_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    calibration, validation = image_data
    return compress_to_directory(conv_model, calibration, tmp_path_factory.mktemp("conv") / "out",
                                 validation=validation, settings=FAST)


@pytest.mark.parametrize("fixture", ["mlp_result", "conv_result"])
def test_every_onnx_variant_passes_and_runs_in_onnxruntime(fixture: str, request: pytest.FixtureRequest) -> None:
    result = request.getfixturevalue(fixture)
    by_name = {variant["name"]: variant for variant in result.report["variants"]}
    assert list(by_name) == ONNX_VARIANTS
    for name, variant in by_name.items():
        assert variant["gate"] == "passed", (name, variant["reasons"])
        assert variant["top1_agreement"] >= 0.99 and variant["accuracy_drop"] <= 0.01
        path = result.workdir / "variants" / f"{name}.onnx"
        model = load_model(path, "onnxruntime")
        assert [spec.name for spec in model.inputs] == [spec.name for spec in result.source.inputs]
        outputs = model.predict({model.inputs[0].name: np.zeros((2, *model.inputs[0].shape[1:]), np.float32)})
        assert [array.dtype for array in outputs.values()] == [np.dtype(np.float32)]


def test_compressed_variants_are_smaller_and_quantized(mlp_result) -> None:
    variants = {variant["name"]: variant for variant in mlp_result.report["variants"]}
    assert variants["onnx-fp16"]["size_ratio"] < 0.6
    assert variants["onnx-int8-dynamic"]["size_ratio"] < 0.5 and variants["onnx-int8-static"]["size_ratio"] < 0.6
    assert variants["onnx-fp32"]["outputs"][0]["sqnr_db"] is None  # same numerics: identical outputs
    ops = {name: {node.op_type for node in onnx.load(mlp_result.workdir / "variants" / f"{name}.onnx").graph.node}
           for name in ONNX_VARIANTS}
    assert "MatMulInteger" in ops["onnx-int8-dynamic"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops["onnx-int8-static"]
    fp16 = onnx.load(mlp_result.workdir / "variants" / "onnx-fp16.onnx")
    types = {tensor.name: tensor.data_type for tensor in fp16.graph.initializer}
    assert types["w1__fp16"] == types["w2__fp16"] == types["b1__fp16"] == onnx.TensorProto.FLOAT16
    assert types["b2"] == onnx.TensorProto.FLOAT  # 10 values: not worth converting
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_dynamic_quantization_leaves_convolutions_alone(conv_result) -> None:
    model = onnx.load(conv_result.workdir / "variants" / "onnx-int8-dynamic.onnx")
    ops = {node.op_type for node in model.graph.node}
    assert "Conv" in ops and "ConvInteger" not in ops


def test_report_profile_and_release_order(mlp_result) -> None:
    report = json.loads((mlp_result.workdir / REPORT_FILE).read_text())
    assert report == mlp_result.report
    assert report["evaluation"] == {"data": "validation", "rows": 300, "labelled": True, "task": "classes",
                                    "prediction_output": "scores", "calibration_rows": 200}
    assert report["release_order"][:2] == sorted(report["release_order"][:2], key=lambda n: next(
        v["latency_ms_p50"] for v in report["variants"] if v["name"] == n))
    assert [name.split("-")[1] for name in report["release_order"]] == ["int8", "int8", "fp16", "fp32"]
    profile = ReferenceProfile.from_bytes((mlp_result.workdir / PROFILE_FILE).read_bytes())
    assert profile.sha256() == report["reference_profile_sha256"]
    assert profile.input_name == "input" and len(profile.features) == 64 and profile.samples == 200
    assert profile.predictions is not None and sum(profile.predictions.counts) == 200
    assert report["original"]["accuracy"] > 0.9 and report["host"]["arch"]


def test_scikit_learn_export_with_label_output(mlp_data: tuple[Path, Path], tmp_path: Path) -> None:
    calibration, validation = mlp_data
    result = compress_to_directory(FIXTURES / "digits_mlp.onnx", calibration, tmp_path / "out",
                                   validation=validation, settings=FAST)
    assert result.report["evaluation"]["prediction_output"] == "label"
    assert [v["gate"] for v in result.report["variants"]] == ["passed"] * 4
    assert result.profile.predictions is not None and result.profile.predictions.kind == "classes"


def test_variant_selection_and_calibration_methods(conv_model: Path, image_data: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    from compression.settings import CompressionSettings

    calibration, _ = image_data
    for method in ("percentile", "entropy"):
        settings = CompressionSettings(variants=("onnx-int8-static",), calibration_method=method, latency_runs=2,
                                       latency_warmup=0)
        result = compress_to_directory(conv_model, calibration, tmp_path / method, settings=settings)
        assert [v["name"] for v in result.report["variants"]] == ["onnx-int8-static"]
        assert result.report["settings"]["calibration_method"] == method
        assert result.report["evaluation"]["data"] == "calibration"
        assert result.report["variants"][0]["accuracy"] is None  # no labels in the calibration data
        assert result.report["variants"][0]["gate"] == "passed", result.report["variants"][0]["reasons"]
