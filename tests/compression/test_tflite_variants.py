"""The TFLite path for real: a Keras model converted by TensorFlow, and an existing .tflite
quantized with ai-edge-quantizer; every variant loads in LiteRT and passes the gate."""

from pathlib import Path

import numpy as np
import pytest

from agent.runtimes import load_model
from compression import compress_to_directory
from compression.errors import InvalidModelError
from tests.compression import models
from tests.compression.conftest import FAST

pytestmark = pytest.mark.tflite
TFLITE_VARIANTS = ["tflite-fp32", "tflite-fp16", "tflite-int8", "tflite-int8-dynamic"]


@pytest.fixture(scope="module")
def keras_result(model_dir: Path, mlp_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    keras_file = models.keras_mlp(model_dir / "mlp.keras")
    calibration, validation = mlp_data
    return compress_to_directory(keras_file, calibration, tmp_path_factory.mktemp("keras") / "out",
                                 validation=validation, settings=FAST)


def test_keras_model_gives_every_tflite_variant(keras_result) -> None:
    report = keras_result.report
    assert report["model"]["origin"] == "keras" and report["model"]["runtime"] == "tflite"
    variants = {variant["name"]: variant for variant in report["variants"]}
    assert list(variants) == TFLITE_VARIANTS
    for name, variant in variants.items():
        assert variant["gate"] == "passed", (name, variant["reasons"])
        model = load_model(keras_result.workdir / "variants" / f"{name}.tflite", "tflite")
        # inputs and outputs keep the original names and stay float32 (callers do not change)
        assert [(spec.name, spec.dtype) for spec in model.inputs] == \
            [(spec.name, spec.dtype) for spec in keras_result.source.inputs]
        assert [(spec.name, spec.dtype) for spec in model.outputs] == \
            [(spec.name, spec.dtype) for spec in keras_result.source.outputs]
        scores = next(iter(model.predict({model.inputs[0].name: np.zeros((3, 64), np.float32)}).values()))
        assert scores.shape == (3, 10)
    assert variants["tflite-fp32"]["size_ratio"] == 1.0
    assert variants["tflite-fp16"]["size_ratio"] < 0.65
    assert variants["tflite-int8"]["size_ratio"] < 0.5
    assert report["release_order"][-1] == "tflite-fp32"
    assert not (keras_result.workdir / "converted-fp32.tflite").exists()


def test_existing_tflite_file_is_quantized_without_tensorflow_conversion(keras_result, mlp_data, tmp_path) -> None:
    source = keras_result.workdir / "variants" / "tflite-fp32.tflite"
    calibration, validation = mlp_data
    result = compress_to_directory(source, calibration, tmp_path / "out", validation=validation, settings=FAST)
    assert result.report["model"]["origin"] == "tflite"
    assert [v["name"] for v in result.report["variants"]] == TFLITE_VARIANTS[1:]
    assert all(v["gate"] == "passed" for v in result.report["variants"])


def test_keras_file_that_is_not_a_model(mlp_data: tuple[Path, Path], tmp_path: Path) -> None:
    bogus = tmp_path / "model.keras"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(InvalidModelError, match="TensorFlow cannot load model.keras"):
        compress_to_directory(bogus, mlp_data[0], tmp_path / "out", settings=FAST)
    assert not (tmp_path / "out").exists()
