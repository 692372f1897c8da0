"""The local KServe v2 / Open Inference Protocol REST endpoint, exercised as the spec defines it."""

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from agent.inference import InferenceService, ServedModel
from agent.kserve import KServeServer
from agent.runtimes import load_model
from tests.agent.signing import LABELS, ONNX_MODEL, SAMPLE, TFLITE_MODEL

ROWS = np.load(SAMPLE)
LIMIT = 256 * 1024


def served(version: int = 1, path=ONNX_MODEL, runtime: str = "onnxruntime") -> ServedModel:
    return ServedModel("digits", version, "onnx-fp32", f"{version:064x}", runtime, load_model(path, runtime))


@pytest.fixture(scope="module")
def shared_service() -> InferenceService:
    return InferenceService()


@pytest.fixture(scope="module")
def shared_endpoint(shared_service: InferenceService) -> Iterator[KServeServer]:
    server = KServeServer(shared_service, "127.0.0.1", 0, LIMIT).start()
    yield server
    server.stop()


@pytest.fixture
def service(shared_service: InferenceService) -> InferenceService:
    shared_service.swap(served())
    return shared_service


@pytest.fixture
def endpoint(shared_endpoint: KServeServer, service: InferenceService) -> KServeServer:
    return shared_endpoint


def call(server: KServeServer, method: str, path: str, body: Any = None,
         raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        connection.request(method, path, body=payload,
                           headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        connection.close()


def infer_body(rows: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                        "data": rows.reshape(-1).tolist()}], **extra}


def test_health_endpoints(endpoint: KServeServer, service: InferenceService) -> None:
    assert call(endpoint, "GET", "/v2/health/live") == (200, {"live": True})
    assert call(endpoint, "GET", "/v2/health/ready") == (200, {"ready": True})
    assert call(endpoint, "GET", "/v2/models/digits/ready") == (200, {"name": "digits", "ready": True})
    service.swap(None)
    assert call(endpoint, "GET", "/v2/health/ready") == (400, {"ready": False})
    assert call(endpoint, "GET", "/v2/health/live") == (200, {"live": True})
    status, body = call(endpoint, "GET", "/v2/models/digits/ready")
    assert status == 404 and "error" in body


def test_server_metadata(endpoint: KServeServer) -> None:
    status, body = call(endpoint, "GET", "/v2")
    assert status == 200
    assert body["name"] == "edgefleet-agent" and isinstance(body["version"], str) and body["extensions"] == []


def test_model_metadata_uses_kserve_datatypes_and_minus_one_for_dynamic(endpoint: KServeServer) -> None:
    status, body = call(endpoint, "GET", "/v2/models/digits")
    assert status == 200
    assert body == {
        "name": "digits",
        "versions": ["1"],
        "platform": "onnx_onnxv1",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
    }
    assert call(endpoint, "GET", "/v2/models/digits/versions/1")[0] == 200


def test_infer_follows_the_spec(endpoint: KServeServer) -> None:
    status, body = call(endpoint, "POST", "/v2/models/digits/infer", infer_body(ROWS[:4], id="42"))
    assert status == 200
    assert body["model_name"] == "digits" and body["model_version"] == "1" and body["id"] == "42"
    outputs = {output["name"]: output for output in body["outputs"]}
    assert outputs["label"] == {"name": "label", "shape": [4], "datatype": "INT64",
                                "data": np.load(LABELS)[:4].tolist()}
    probabilities = outputs["probabilities"]
    assert probabilities["shape"] == [4, 10] and probabilities["datatype"] == "FP32"
    assert len(probabilities["data"]) == 40
    assert abs(sum(probabilities["data"][:10]) - 1.0) < 1e-4


def test_infer_without_id_has_no_id_and_accepts_nested_data(endpoint: KServeServer) -> None:
    body = {"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": ROWS[:2].tolist()}],
            "outputs": [{"name": "label"}], "parameters": {}}
    status, answer = call(endpoint, "POST", "/v2/models/digits/versions/1/infer", body)
    assert status == 200
    assert "id" not in answer
    assert [output["name"] for output in answer["outputs"]] == ["label"]
    assert answer["outputs"][0]["data"] == np.load(LABELS)[:2].tolist()


def test_integer_json_values_are_fine_for_float_tensors(endpoint: KServeServer) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]}
    assert call(endpoint, "POST", "/v2/models/digits/infer", body)[0] == 200


BAD_REQUESTS = [
    ({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "INT64", "data": [0] * 64}]}, "datatype FP32"),
    ({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 63}]}, "63 elements"),
    ({"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": [0.5] * 63}]}, "shape"),
    ({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": ["a"] * 64}]}, "not FP32"),
    ({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [[0.5] * 60, [1]]}]}, "ragged"),
    ({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}, "unknown input"),
    ({"inputs": []}, "missing input"),
    ({"inputs": [{"name": "input", "shape": [-1, 64], "datatype": "FP32", "data": [0.5] * 64}]}, "integers >= 0"),
    ({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32"}]}, "missing 'data'"),
    ({**{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]},
      "outputs": [{"name": "nope"}]}, "unknown output"),
    ({"inputs": "input"}, "wrong JSON type"),
    ([1, 2], "must be a JSON object"),
    ({"id": 7, "inputs": []}, "id must be a string"),
]


@pytest.mark.parametrize(("body", "message"), BAD_REQUESTS)
def test_bad_requests_get_400_with_an_error(endpoint: KServeServer, body: Any, message: str) -> None:
    status, answer = call(endpoint, "POST", "/v2/models/digits/infer", body)
    assert status == 400
    assert set(answer) == {"error"} and message in answer["error"]


def test_invalid_json_gets_400(endpoint: KServeServer) -> None:
    status, answer = call(endpoint, "POST", "/v2/models/digits/infer", raw=b"{not json")
    assert status == 400 and "not valid JSON" in answer["error"]


def test_too_large_body_gets_400_without_reading_it(endpoint: KServeServer) -> None:
    status, answer = call(endpoint, "POST", "/v2/models/digits/infer", raw=b" " * (LIMIT + 1))
    assert status == 400 and "limit" in answer["error"]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v2/models/other"), ("POST", "/v2/models/other/infer"), ("GET", "/v2/models/digits/versions/9"),
    ("GET", "/nope"), ("POST", "/v2/health/live"),
])
def test_unknown_models_and_paths_get_404(endpoint: KServeServer, method: str, path: str) -> None:
    status, answer = call(endpoint, method, path, {} if method == "POST" else None)
    assert status == 404 and "error" in answer


def test_runtime_failures_are_500_with_an_error(endpoint: KServeServer, service: InferenceService) -> None:
    class Exploding:
        runtime = "onnxruntime"
        inputs = service.resolve().inputs
        outputs = service.resolve().outputs

        def predict(self, inputs: Any) -> Any:
            from agent.errors import InferenceError

            raise InferenceError("the runtime fell over")

    service.swap(ServedModel("digits", 1, "onnx-fp32", "0" * 64, "onnxruntime", Exploding()))
    status, answer = call(endpoint, "POST", "/v2/models/digits/infer", infer_body(ROWS[:1]))
    assert status == 500 and answer == {"error": "the runtime fell over"}


def test_keep_alive_connection_serves_several_requests(endpoint: KServeServer) -> None:
    connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=10)
    try:
        for _ in range(3):
            connection.request("POST", "/v2/models/digits/infer", body=json.dumps(infer_body(ROWS[:1])))
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["outputs"]
    finally:
        connection.close()


def test_hot_swap_over_http_drops_no_request(endpoint: KServeServer, service: InferenceService) -> None:
    second = served(2)
    first = service.resolve()
    stop = threading.Event()
    failures: list[str] = []
    versions: set[str] = set()

    def client() -> None:
        while not stop.is_set():
            status, answer = call(endpoint, "POST", "/v2/models/digits/infer", infer_body(ROWS[:2]))
            if status != 200:
                failures.append(f"{status} {answer}")
            else:
                versions.add(answer["model_version"])

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    for i in range(30):
        service.swap(second if i % 2 == 0 else first)
        threading.Event().wait(0.01)
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == []
    assert versions == {"1", "2"}


@pytest.mark.tflite
def test_tflite_model_over_kserve() -> None:
    service = InferenceService()
    service.swap(served(path=TFLITE_MODEL, runtime="tflite"))
    server = KServeServer(service, "127.0.0.1", 0, LIMIT).start()
    try:
        status, metadata = call(server, "GET", "/v2/models/digits")
        assert status == 200 and metadata["platform"] == "tensorflow_tflite"
        name = metadata["inputs"][0]["name"]
        body = {"inputs": [{"name": name, "shape": [1, 64], "datatype": "FP32", "data": ROWS[0].tolist()}]}
        status, answer = call(server, "POST", "/v2/models/digits/infer", body)
        assert status == 200
        probabilities = np.array(answer["outputs"][0]["data"])
        assert probabilities.shape == (10,) and int(probabilities.argmax()) == int(np.load(LABELS)[0])
    finally:
        server.stop()
