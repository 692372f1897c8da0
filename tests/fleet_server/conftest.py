"""Fixtures for the fleet server tests: an app on a temp data dir (SQLite),
served through Starlette's TestClient, with helpers to upload and enroll."""

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from fleet_server.app import create_app
from fleet_server.core.config import Settings

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"
ONNX_FIXTURE = MODELS / "digits_mlp.onnx"
TFLITE_FIXTURE = MODELS / "digits_mlp.tflite"
ADMIN_TOKEN = "test-admin-token-" + "a" * 24
BOOTSTRAP_TOKEN = "test-bootstrap-token-" + "b" * 20


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "admin_token": ADMIN_TOKEN,
        "bootstrap_token": BOOTSTRAP_TOKEN,
        "embedded_mqtt_port": 0,
        "publish_timeout_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


def build_onnx_model(path: Path, marker: str = "") -> Path:
    """A tiny valid ONNX model (y = x + 1, x: float32 [N, 4]); ``marker`` changes its bytes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "add_one", [x], [y], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.doc_string = f"edgefleet test {marker or secrets.token_hex(4)}"
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Api:
    """A TestClient with the operator token and shortcuts for common calls."""

    def __init__(self, client: TestClient, workdir: Path) -> None:
        self.client = client
        self.workdir = workdir
        self.headers = admin_headers()

    @property
    def app(self) -> Any:
        return self.client.app

    @property
    def runtime(self) -> Any:
        return self.client.app.state.runtime  # type: ignore[attr-defined]

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(f"/api/v1{path}", headers=kwargs.pop("headers", self.headers), **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.client.post(f"/api/v1{path}", headers=kwargs.pop("headers", self.headers), **kwargs)

    def upload(self, path: Path | None = None, name: str = "model-a", **fields: Any) -> Any:
        path = path or build_onnx_model(self.workdir / f"m-{secrets.token_hex(4)}.onnx")
        data = {"name": name, **{key: str(value) for key, value in fields.items()}}
        with open(path, "rb") as handle:
            return self.post("/models", files={"file": (path.name, handle, "application/octet-stream")}, data=data)

    def release(self, name: str, version: int) -> Any:
        return self.post("/releases", json={"model": name, "version": version})

    def enroll(self, device_id: str, tags: tuple[str, ...] = (), **overrides: Any) -> Any:
        body = {"device_id": device_id, "bootstrap_token": BOOTSTRAP_TOKEN, "arch": "x86_64", "ram_mb": 2048,
                "runtimes": ["onnxruntime", "tflite"], "agent_version": "0.1.0", "tags": list(tags)}
        body.update(overrides)
        return self.client.post("/api/v1/devices/enroll", json=body)

    def released_model(self, name: str) -> dict[str, Any]:
        """Upload a fresh model version of ``name`` and release it; return the release."""
        version = self.upload(name=name)
        assert version.status_code == 201, version.text
        release = self.release(name, version.json()["version"])
        assert release.status_code == 201, release.text
        return release.json()


@pytest.fixture
def api_factory(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """``api_factory(**settings_overrides)`` starts an app; all are stopped after the test."""
    clients: list[TestClient] = []

    def start(data_dir: Path | None = None, **overrides: Any) -> Api:
        directory = data_dir or tmp_path / f"server-{len(clients)}"
        client = TestClient(create_app(make_settings(directory, **overrides)))
        client.__enter__()
        clients.append(client)
        api = Api(client, tmp_path)
        if "mqtt_url" not in overrides:
            assert api.runtime.bridge.wait_connected(10), "the bridge did not connect to the embedded broker"
        return api

    try:
        yield start
    finally:
        for client in reversed(clients):
            client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One app shared by a test module (embedded broker on a free port)."""
    directory = tmp_path_factory.mktemp("server")
    with TestClient(create_app(make_settings(directory / "data"))) as client:
        api = Api(client, directory)
        assert api.runtime.bridge.wait_connected(10), "the bridge did not connect to the embedded broker"
        yield api
