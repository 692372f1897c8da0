"""The in-process inference API: validation, metadata, and hot swap without dropped requests."""

import threading
import time

import numpy as np
import pytest

from agent.errors import InvalidInferenceRequestError, ModelNotReadyError
from agent.inference import InferenceService, ServedModel
from agent.runtimes import load_model
from tests.agent.signing import LABELS, ONNX_MODEL, SAMPLE

ROWS = np.load(SAMPLE)


def served(version: int, name: str = "digits") -> ServedModel:
    return ServedModel(name, version, "onnx-fp32", f"{version:064x}", "onnxruntime",
                       load_model(ONNX_MODEL, "onnxruntime"))


def test_no_model_means_not_ready() -> None:
    service = InferenceService()
    assert not service.ready
    with pytest.raises(ModelNotReadyError, match="no model is installed"):
        service.predict({"input": ROWS})


def test_predict_and_metadata() -> None:
    service = InferenceService()
    service.swap(served(3))
    assert service.ready
    outputs = service.predict({"input": ROWS}, name="digits")
    assert (outputs["label"] == np.load(LABELS)).all()
    metadata = service.metadata()
    assert metadata["name"] == "digits" and metadata["version"] == 3
    assert metadata["inputs"] == [{"name": "input", "dtype": "float32", "shape": [None, 64]}]


@pytest.mark.parametrize(("inputs", "message"), [
    ({"input": ROWS.astype(np.float64)}, "input input must be float32, got float64"),
    ({"input": ROWS[:, :63]}, r"must have shape \[-1, 64\], got \[16, 63\]"),
    ({"input": ROWS[0]}, "must have shape"),
    ({}, r"missing \['input'\]"),
    ({"input": ROWS, "extra": ROWS}, r"unknown \['extra'\]"),
])
def test_inputs_are_validated_against_the_schema(inputs: dict[str, np.ndarray], message: str) -> None:
    service = InferenceService()
    service.swap(served(1))
    with pytest.raises(InvalidInferenceRequestError, match=message):
        service.predict(inputs)


def test_other_model_names_and_versions_are_unknown() -> None:
    service = InferenceService()
    service.swap(served(1))
    with pytest.raises(ModelNotReadyError, match="unknown model 'other'"):
        service.predict({"input": ROWS}, name="other")
    with pytest.raises(ModelNotReadyError, match="no version '2'"):
        service.resolve("digits", "2")
    assert service.resolve("digits", "1").version == 1


def test_hot_swap_under_concurrent_requests_drops_nothing() -> None:
    service = InferenceService()
    models = [served(1), served(2)]
    service.swap(models[0])
    expected = np.load(LABELS)
    stop = threading.Event()
    errors: list[BaseException] = []
    answered = {1: 0, 2: 0}
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            try:
                model = service.resolve()
                outputs = model.model.predict({"input": ROWS})
                assert (outputs["label"] == expected).all()
                with lock:
                    answered[model.version] += 1
            except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(40):
        service.swap(models[i % 2])
        time.sleep(0.005)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert answered[1] > 0 and answered[2] > 0
