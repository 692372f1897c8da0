"""Fixtures for end-to-end tests: the real server under uvicorn, agents as
real processes, a real Mosquitto; everything on 127.0.0.1."""

import itertools
import secrets
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest

from fleet_server.client import FleetClient
from fleet_server.localfleet import LocalAgent, LocalServer

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"
_device_numbers = itertools.count(1)


def start_server(data_dir: Path, mqtt_url: str, **extra_env: str) -> LocalServer:
    server = LocalServer(
        data_dir, bootstrap_token=secrets.token_urlsafe(16), admin_token=secrets.token_urlsafe(24),
        mqtt_url=mqtt_url, extra_env=extra_env,
    )
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def server(mosquitto, tmp_path_factory) -> Iterator[LocalServer]:
    server = start_server(tmp_path_factory.mktemp("server"), mosquitto.url)
    yield server
    server.stop()


@pytest.fixture
def client(server: LocalServer) -> Iterator[FleetClient]:
    with FleetClient(server.url, server.admin_token) as client:
        yield client


class AgentFactory:
    def __init__(self, root: Path, server: LocalServer) -> None:
        self.root = root
        self.server = server
        self.agents: list[LocalAgent] = []

    def __call__(self, server_url: str | None = None, start: bool = True, **env: str) -> LocalAgent:
        device_id = f"it-device-{next(_device_numbers)}"
        agent = LocalAgent(device_id, self.root / device_id, extra_env=env)
        agent.enroll(server_url or self.server.url, self.server.bootstrap_token)
        self.agents.append(agent)
        if start:
            agent.start()
            agent.wait_serving()
        return agent

    def stop_all(self) -> None:
        for agent in self.agents:
            agent.stop()


@pytest.fixture
def agents(tmp_path: Path, server: LocalServer) -> Iterator[AgentFactory]:
    factory = AgentFactory(tmp_path, server)
    yield factory
    factory.stop_all()


def unique_model(source: Path, directory: Path, marker: str) -> Path:
    """A copy of ``source`` with different bytes (content addressing would dedupe an exact copy)."""
    model = onnx.load(source)
    model.doc_string = f"edgefleet test model {marker} {secrets.token_hex(4)}"
    path = directory / f"{marker}.onnx"
    onnx.save(model, path)
    return path


def failing_model(directory: Path) -> Path:
    """Valid ONNX that parses and declares a schema, but cannot run: 64 values reshaped into rows of 7."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "bad_shape"], ["probabilities"])],
        "fails_at_inference",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 7])],
        [helper.make_tensor("bad_shape", TensorProto.INT64, [2], [-1, 7])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = directory / "fails_health_check.onnx"
    onnx.save(model, path)
    return path


def publish_release(client: FleetClient, path: Path, name: str) -> int:
    version = client.upload_model(path, name)["version"]
    client.create_release(name, version)
    return version


def target_state(deployment: dict, device_id: str) -> dict:
    return next(t for t in deployment["targets"] if t["device_id"] == device_id)
