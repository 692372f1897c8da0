"""The post-install health check: sample inference, output schema, finiteness, latency bound."""

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from agent.errors import HealthCheckError, InferenceError
from agent.healthcheck import check_model, median, sample_inputs
from agent.protocol.metadata import TensorSpec
from agent.runtimes import load_model
from tests.agent.signing import DIGITS_INPUTS, DIGITS_OUTPUTS, ONNX_MODEL, TFLITE_MODEL


class FakeModel:
    runtime = "onnxruntime"

    def __init__(self, outputs: dict[str, np.ndarray] | None = None, delay_s: float = 0.0,
                 error: Exception | None = None) -> None:
        self.inputs = DIGITS_INPUTS
        self.outputs = DIGITS_OUTPUTS
        self._outputs = outputs
        self._delay_s = delay_s
        self._error = error
        self.seen: list[Mapping[str, np.ndarray]] = []

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen.append(inputs)
        time.sleep(self._delay_s)
        if self._error is not None:
            raise self._error
        assert self._outputs is not None
        return self._outputs


GOOD = {"label": np.zeros(1, dtype=np.int64), "probabilities": np.full((1, 10), 0.1, dtype=np.float32)}


def test_sample_inputs_follow_the_schema_with_dynamic_dimensions_as_one() -> None:
    specs = (TensorSpec("x", "float32", (None, 64)), TensorSpec("ids", "int64", (2, None)),
             TensorSpec("mask", "bool", (3,)))
    sample = sample_inputs(specs)
    assert sample["x"].shape == (1, 64) and sample["x"].dtype == np.float32
    assert ((sample["x"] >= 0) & (sample["x"] < 1)).all()
    assert sample["ids"].shape == (2, 1) and not sample["ids"].any()
    assert sample["mask"].dtype == np.bool_
    assert np.array_equal(sample_inputs(specs)["x"], sample["x"])


def test_sample_floats_spread_over_the_unit_interval() -> None:
    for dtype in ("float16", "float32", "float64"):
        values = sample_inputs((TensorSpec("x", dtype, (4096,)),))["x"]
        assert ((values >= 0) & (values < 1)).all()
        counts, _ = np.histogram(values.astype(np.float64), bins=10, range=(0.0, 1.0))
        assert counts.min() >= 400 and counts.max() <= 420, counts  # ~410 per tenth
    assert not np.array_equal(sample_inputs((TensorSpec("x", "float32", (8,)),), seed=1)["x"],
                              sample_inputs((TensorSpec("x", "float32", (8,)),))["x"])


def test_median_of_odd_and_even_counts() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5


HEALTH_CHECK_IMPORTS = """
import sys
from agent.healthcheck import check_model
from agent.runtimes import load_model
from tests.agent.signing import DIGITS_INPUTS, DIGITS_OUTPUTS, ONNX_MODEL
model = load_model(ONNX_MODEL, "onnxruntime")
before = set(sys.modules)  # numpy 1.x imports both with numpy itself; numpy 2 does not
check_model(model, DIGITS_INPUTS, DIGITS_OUTPUTS, 5000)
print(sorted(name for name in ("numpy.random", "numpy.ma") if name in set(sys.modules) - before))
"""


def test_health_check_leaves_numpy_random_and_masked_arrays_unloaded() -> None:
    result = subprocess.run([sys.executable, "-c", HEALTH_CHECK_IMPORTS], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "[]"


def test_sample_inputs_refuse_string_tensors() -> None:
    with pytest.raises(HealthCheckError, match="no sample data"):
        sample_inputs((TensorSpec("text", "str", (1,)),))


def test_real_onnx_model_passes() -> None:
    report = check_model(load_model(ONNX_MODEL, "onnxruntime"), DIGITS_INPUTS, DIGITS_OUTPUTS, 5000)
    assert report.latency_ms >= 0


@pytest.mark.tflite
def test_real_tflite_model_passes() -> None:
    model = load_model(TFLITE_MODEL, "tflite")
    check_model(model, model.inputs, model.outputs, 5000)


@pytest.mark.parametrize(("outputs", "declared", "message"), [
    ({"label": GOOD["label"]}, DIGITS_OUTPUTS, "output probabilities is missing"),
    ({**GOOD, "label": np.zeros(1, dtype=np.int32)}, DIGITS_OUTPUTS, "label is int32, release says int64"),
    (GOOD, (TensorSpec("probabilities", "float32", (None, 7)),), r"shape \[1, 10\], release says \['\?', 7\]"),
    (GOOD, (TensorSpec("probabilities", "float32", (None,)),), "shape"),
    ({**GOOD, "probabilities": np.full((1, 10), np.nan, dtype=np.float32)}, DIGITS_OUTPUTS, "NaN"),
])
def test_output_schema_deviations_fail(outputs: dict[str, np.ndarray], declared: tuple[TensorSpec, ...],
                                       message: str) -> None:
    with pytest.raises(HealthCheckError, match=message):
        check_model(FakeModel(outputs), DIGITS_INPUTS, declared, 5000)


def test_a_model_that_cannot_run_fails() -> None:
    with pytest.raises(HealthCheckError, match="sample inference failed: .*cannot reshape"):
        check_model(FakeModel(error=InferenceError("cannot reshape")), DIGITS_INPUTS, DIGITS_OUTPUTS, 5000)


def test_a_slow_model_fails_the_latency_bound() -> None:
    with pytest.raises(HealthCheckError, match=r"took \d+\.\d ms, bound is 5 ms"):
        check_model(FakeModel(GOOD, delay_s=0.02), DIGITS_INPUTS, DIGITS_OUTPUTS, 5)


def test_release_schema_mismatch_with_real_model_fails() -> None:
    model = load_model(ONNX_MODEL, "onnxruntime")
    with pytest.raises(HealthCheckError, match="sample inference failed"):
        check_model(model, (TensorSpec("pixels", "float32", (None, 64)),), DIGITS_OUTPUTS, 5000)
