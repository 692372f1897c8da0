"""Fixtures for the fleet server tests: an app on a temp data dir, served
through Starlette's TestClient, with helpers to upload and enroll.

Database tests run on both backends: ``database_backend`` is a module-scoped
fixture parametrized over SQLite and PostgreSQL, and every fixture that
gives a test a database (``api``, ``api_factory``, ``database_url``,
``migrated_engine``) depends on it, so a test that uses one of them runs
once per backend (ids ``[sqlite]`` and ``[postgresql]``) without asking.
On PostgreSQL each app or test gets a database of its own in the session's
shared cluster (``postgres`` in tests/conftest.py), dropped afterwards.
"""

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper
from sqlalchemy import Engine

from fleet_server.app import create_app
from fleet_server.core.config import Settings
from fleet_server.core.db import create_db_engine
from fleet_server.core.schema import upgrade_schema
from tests.fleet_server.postgres import PostgresCluster

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"
ONNX_FIXTURE = MODELS / "digits_mlp.onnx"
TFLITE_FIXTURE = MODELS / "digits_mlp.tflite"
ADMIN_TOKEN = "test-admin-token-" + "a" * 24
BOOTSTRAP_TOKEN = "test-bootstrap-token-" + "b" * 20
DATABASE_BACKENDS = ("sqlite", "postgresql")


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


class BackendDatabases:
    """Database URLs for one backend: ``None`` on SQLite (the server's default file in its data dir),
    a fresh migrated database on PostgreSQL; ``close()`` drops the PostgreSQL ones."""

    def __init__(self, backend: str, request: pytest.FixtureRequest) -> None:
        self.backend = backend
        self.cluster: PostgresCluster | None = request.getfixturevalue("postgres") if backend == "postgresql" \
            else None
        self.prefix = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40].strip("_") or "test"
        self._names: list[str] = []

    def new_url(self) -> str | None:
        if self.cluster is None:
            return None
        url = self.cluster.new_database(self.prefix)
        self._names.append(url.rsplit("/", 1)[1])
        return url

    def close(self) -> None:
        if self.cluster is not None:
            for name in self._names:
                self.cluster.drop_database(name)


@pytest.fixture(scope="module", params=DATABASE_BACKENDS)
def database_backend(request: pytest.FixtureRequest) -> str:
    """The database engine of this run of the module's tests: "sqlite" or "postgresql"."""
    return request.param


@pytest.fixture
def database_url(database_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database migrated to the newest revisions, on the module's backend."""
    databases = BackendDatabases(database_backend, request)
    url = databases.new_url()
    if url is None:
        url = f"sqlite:///{tmp_path / 'edgefleet.db'}"
        engine = create_db_engine(url)
        upgrade_schema(engine)
        engine.dispose()
    try:
        yield url
    finally:
        databases.close()


@pytest.fixture
def migrated_engine(database_url: str) -> Iterator[Engine]:
    """An engine on ``database_url`` (disposed after the test)."""
    engine = create_db_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def api_factory(tmp_path: Path, database_backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Api]]:
    """``api_factory(**settings_overrides)`` starts an app; all are stopped after the test.

    Each new data dir gets its own database on the module's backend; restarting on a data dir that
    was used before in the test reopens that data dir's database.
    """
    clients: list[TestClient] = []
    databases = BackendDatabases(database_backend, request)
    urls: dict[Path, str | None] = {}

    def start(data_dir: Path | None = None, **overrides: Any) -> Api:
        directory = data_dir or tmp_path / f"server-{len(clients)}"
        if "database_url" not in overrides:
            if directory not in urls:
                urls[directory] = databases.new_url()
            if urls[directory] is not None:
                overrides["database_url"] = urls[directory]
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
        databases.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, database_backend: str, request: pytest.FixtureRequest
        ) -> Iterator[Api]:
    """One app shared by a test module (embedded broker on a free port), on the module's backend."""
    directory = tmp_path_factory.mktemp("server")
    databases = BackendDatabases(database_backend, request)
    url = databases.new_url()
    overrides = {} if url is None else {"database_url": url}
    try:
        with TestClient(create_app(make_settings(directory / "data", **overrides))) as client:
            api = Api(client, directory)
            assert api.runtime.bridge.wait_connected(10), "the bridge did not connect to the embedded broker"
            yield api
    finally:
        databases.close()
