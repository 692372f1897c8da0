"""Runtimes behind one interface: onnxruntime, TFLite (ai_edge_litert or tflite_runtime), errors."""

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from agent.errors import InferenceError, InvalidInferenceRequestError, ModelLoadError, RuntimeUnavailableError
from agent.protocol.metadata import TensorSpec
from agent.runtimes import load_model
from tests.agent.signing import LABELS, ONNX_MODEL, SAMPLE, TFLITE_MODEL

ROWS = np.load(SAMPLE)
LABELS_ = np.load(LABELS)


def test_onnx_model_schema_and_predictions() -> None:
    model = load_model(ONNX_MODEL, "onnxruntime")
    assert model.runtime == "onnxruntime"
    assert model.inputs == (TensorSpec("input", "float32", (None, 64)),)
    assert model.outputs == (TensorSpec("label", "int64", (None,)), TensorSpec("probabilities", "float32", (None, 10)))
    outputs = model.predict({"input": ROWS})
    assert outputs["label"].dtype == np.int64
    assert outputs["probabilities"].shape == (len(ROWS), 10)
    assert (outputs["label"] == LABELS_).all()


def test_onnx_rejects_missing_inputs_and_reports_runtime_failures() -> None:
    model = load_model(ONNX_MODEL, "onnxruntime")
    with pytest.raises(InvalidInferenceRequestError, match="expects inputs"):
        model.predict({"pixels": ROWS})
    with pytest.raises(InferenceError, match="onnxruntime failed"):
        model.predict({"input": ROWS[:, :10]})


@pytest.mark.tflite
def test_tflite_model_schema_predictions_and_batch_resize() -> None:
    model = load_model(TFLITE_MODEL, "tflite")
    assert model.runtime == "tflite"
    (spec,) = model.inputs
    assert spec.dtype == "float32" and spec.shape == (None, 64)
    (output,) = model.outputs
    single = model.predict({spec.name: ROWS[:1]})[output.name]
    assert single.shape == (1, 10)
    batch = model.predict({spec.name: ROWS})[output.name]
    assert batch.shape == (len(ROWS), 10)
    assert (batch.argmax(axis=1) == LABELS_).all()
    assert np.allclose(batch[:1], single, atol=1e-5)


@pytest.mark.tflite
def test_tflite_is_safe_under_concurrent_calls() -> None:
    model = load_model(TFLITE_MODEL, "tflite")
    name = model.inputs[0].name
    expected = {n: model.predict({name: ROWS[:n]})[model.outputs[0].name] for n in (1, 3, 16)}
    failures: list[str] = []

    def worker(n: int) -> None:
        for _ in range(30):
            got = model.predict({name: ROWS[:n]})[model.outputs[0].name]
            if got.shape != expected[n].shape or not np.allclose(got, expected[n], atol=1e-5):
                failures.append(f"batch {n} got {got.shape}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in (1, 3, 16, 1, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_runtimes_are_imported_only_when_a_model_loads() -> None:
    import subprocess

    code = ("import sys, agent.daemon, agent.runtimes; "
            "print(sorted(m for m in ('onnxruntime', 'ai_edge_litert', 'tflite_runtime') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_unsupported_runtime_is_a_typed_error() -> None:
    with pytest.raises(RuntimeUnavailableError, match="unsupported runtime 'tensorrt'"):
        load_model(ONNX_MODEL, "tensorrt")


@pytest.mark.parametrize("runtime", ["onnxruntime", pytest.param("tflite", marks=pytest.mark.tflite)])
def test_a_file_that_is_not_a_model_fails_to_load(tmp_path: Path, runtime: str) -> None:
    junk = tmp_path / "model.bin"
    junk.write_bytes(b"\x7fELF" + b"\0" * 200)
    with pytest.raises(ModelLoadError):
        load_model(junk, runtime)
