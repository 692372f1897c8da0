"""The agent as a real process: CLI enroll + run against a real Mosquitto and a local HTTP server.

A paho client plays the fleet server's MQTT side: it publishes signed
directives (retained, QoS 1) and watches status and presence.
"""

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from agent.protocol.messages import PresenceMessage, StatusMessage
from agent.protocol.topics import TopicKind, device_topic
from fleet_server.processes import ManagedProcess, wait_until
from tests.agent.artifact_server import ArtifactServer
from tests.agent.signing import LABELS, SAMPLE, MiniFleet, distinct_onnx, onnx_variant

AGENT = [sys.executable, "-m", "agent.cli"]


class Watcher:
    """Publishes directives and records status/presence messages of one device."""

    def __init__(self, host: str, port: int, device_id: str) -> None:
        self.device_id = device_id
        self.statuses: list[StatusMessage] = []
        self.presence: list[PresenceMessage] = []
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watcher-{device_id}")
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.subscribe([(device_topic(device_id, TopicKind.STATUS), 1),
                                (device_topic(device_id, TopicKind.PRESENCE), 1)])
        self._client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/status"):
            self.statuses.append(StatusMessage.decode(message.payload))
        else:
            self.presence.append(PresenceMessage.decode(message.payload))

    def publish_directive(self, payload: bytes) -> None:
        info = self._client.publish(device_topic(self.device_id, TopicKind.DIRECTIVE), payload, qos=1, retain=True)
        info.wait_for_publish(10)

    def states(self, sequence: int) -> list[str]:
        return [status.state for status in self.statuses if status.sequence == sequence]

    def wait_for_state(self, sequence: int, state: str, timeout: float = 60.0) -> StatusMessage:
        wait_until(lambda: state in self.states(sequence), timeout, f"{state} for directive {sequence}")
        return [s for s in self.statuses if s.sequence == sequence and s.state == state][-1]

    def wait_for_presence(self, predicate: Callable[[PresenceMessage], bool], timeout: float = 30.0) -> None:
        wait_until(lambda: any(predicate(p) for p in list(self.presence)), timeout, "a presence message")

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture
def fleet() -> MiniFleet:
    return MiniFleet("proc-dev-1")


@pytest.fixture
def http_server(fleet: MiniFleet, mosquitto: Any) -> Iterator[ArtifactServer]:
    with ArtifactServer(root_document=fleet.root_document, mqtt_url=mosquitto.url) as server:
        yield server


@pytest.fixture
def watcher(mosquitto: Any, fleet: MiniFleet) -> Iterator[Watcher]:
    watcher = Watcher(mosquitto.host, mosquitto.port, fleet.device_id)
    yield watcher
    watcher.close()


def agent_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EDGEFLEET_AGENT_")}
    env.update({"EDGEFLEET_AGENT_HEARTBEAT_INTERVAL_S": "1", "EDGEFLEET_AGENT_DOWNLOAD_RETRY_BASE_S": "0.1",
                "EDGEFLEET_AGENT_DOWNLOAD_RETRY_MAX_S": "0.5", **extra})
    return env


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, env=agent_env(), timeout=60)


def enroll(data_dir: Path, server: ArtifactServer, device_id: str) -> None:
    result = run_cli("--data-dir", str(data_dir), "enroll", "--server", server.url, "--token", "bootstrap",
                     "--device-id", device_id, "--tag", "lab")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["device_id"] == device_id


def start_agent(data_dir: Path, tmp_path: Path) -> ManagedProcess:
    process = ManagedProcess("agent", [*AGENT, "--data-dir", str(data_dir), "run", "--inference-port", "0"],
                             tmp_path / "agent.log", env=agent_env())
    process.start()
    process.wait_for_log("event=agent_started", timeout=30)
    return process


def inference_url(data_dir: Path) -> str:
    return f"http://127.0.0.1:{(data_dir / 'inference_port').read_text().strip()}"


def infer(data_dir: Path, rows: np.ndarray) -> dict[str, Any]:
    body = {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                        "data": rows.reshape(-1).tolist()}]}
    request = urllib.request.Request(f"{inference_url(data_dir)}/v2/models/digits/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def status(data_dir: Path) -> dict[str, Any]:
    result = run_cli("--data-dir", str(data_dir), "status")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def release_message(fleet: MiniFleet, server: ArtifactServer, version: int) -> bytes:
    data = distinct_onnx(f"proc-v{version}")
    server.add(data)
    return fleet.message(fleet.release((onnx_variant(data),), version=version))


def test_enrolled_agent_installs_serves_reports_and_stops_cleanly(fleet: MiniFleet, http_server: ArtifactServer,
                                                                  watcher: Watcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "device"
    enroll(data_dir, http_server, fleet.device_id)
    agent = start_agent(data_dir, tmp_path)
    try:
        watcher.wait_for_presence(lambda p: p.online and p.deployment_state == "idle")
        watcher.publish_directive(release_message(fleet, http_server, 1))
        final = watcher.wait_for_state(1, "succeeded")
        assert watcher.states(1) == ["notified", "downloading", "verifying", "installing", "health_check",
                                     "succeeded"]
        assert (final.release_name, final.release_version, final.variant) == ("digits", 1, "onnx-fp32")
        answer = infer(data_dir, np.load(SAMPLE)[:3])
        labels = next(o for o in answer["outputs"] if o["name"] == "label")["data"]
        assert labels == np.load(LABELS)[:3].tolist()
        watcher.wait_for_presence(lambda p: p.online and [m.version for m in p.models] == [1])
        assert status(data_dir)["current"]["version"] == 1
        assert http_server.requests[-1]["authorization"] == "Bearer device-secret"
    finally:
        code = agent.stop()
    assert code == 0
    watcher.wait_for_presence(lambda p: not p.online)


def test_restart_serves_the_installed_model_and_ignores_the_retained_directive(
        fleet: MiniFleet, http_server: ArtifactServer, watcher: Watcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "device"
    enroll(data_dir, http_server, fleet.device_id)
    agent = start_agent(data_dir, tmp_path)
    watcher.publish_directive(release_message(fleet, http_server, 1))
    watcher.wait_for_state(1, "succeeded")
    agent.stop()
    final = list(watcher.statuses)[-1]
    count = len(watcher.statuses)

    agent = start_agent(data_dir, tmp_path)
    try:
        agent.wait_for_log("event=directive_ignored reason=replay", timeout=30)
        assert infer(data_dir, np.load(SAMPLE)[:1])["model_version"] == "1"
        # A reconnect repeats the final status exactly (for a server that missed it); nothing new happens.
        assert final.state == "succeeded"
        assert all(status == final for status in list(watcher.statuses)[count:])
    finally:
        agent.stop()


def test_a_directive_sent_while_offline_is_installed_after_reconnecting(
        fleet: MiniFleet, http_server: ArtifactServer, watcher: Watcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "device"
    enroll(data_dir, http_server, fleet.device_id)
    agent = start_agent(data_dir, tmp_path)
    watcher.wait_for_presence(lambda p: p.online)
    agent.stop()
    watcher.publish_directive(release_message(fleet, http_server, 1))

    agent = start_agent(data_dir, tmp_path)
    try:
        watcher.wait_for_state(1, "succeeded")
    finally:
        agent.stop()


def test_a_killed_agent_leaves_its_last_will(fleet: MiniFleet, http_server: ArtifactServer, watcher: Watcher,
                                             tmp_path: Path) -> None:
    data_dir = tmp_path / "device"
    enroll(data_dir, http_server, fleet.device_id)
    process = ManagedProcess(
        "agent", [*AGENT, "--data-dir", str(data_dir), "run", "--inference-port", "0"], tmp_path / "agent.log",
        env=agent_env(EDGEFLEET_AGENT_HEARTBEAT_INTERVAL_S="60"))
    process.start()
    watcher.wait_for_presence(lambda p: p.online)
    seen = len(watcher.presence)
    process.signal(signal.SIGKILL)
    process.wait(10)
    # the broker notices the dead connection when the keepalive lapses (1.5 x 30 s) or at once on a reset socket
    wait_until(lambda: any(not p.online for p in watcher.presence[seen:]), 60, "the last will")
    process.stop()


def test_cli_errors_are_one_line_with_a_hint_and_the_right_exit_code(http_server: ArtifactServer,
                                                                     tmp_path: Path) -> None:
    data_dir = str(tmp_path / "device")
    not_enrolled = run_cli("--data-dir", data_dir, "run")
    assert not_enrolled.returncode == 2
    assert not_enrolled.stderr.count("\n") == 1 and "enroll" in not_enrolled.stderr and "hint:" in not_enrolled.stderr

    bad_token = run_cli("--data-dir", data_dir, "enroll", "--server", http_server.url, "--token", "nope",
                        "--device-id", "dev-x")
    assert bad_token.returncode == 1 and "401" in bad_token.stderr and bad_token.stderr.count("\n") == 1

    unreachable = run_cli("--data-dir", data_dir, "enroll", "--server", "http://127.0.0.1:9", "--token", "t",
                          "--device-id", "dev-x", "--timeout", "2")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr

    bad_id = run_cli("--data-dir", data_dir, "enroll", "--server", http_server.url, "--token", "t",
                     "--device-id", "Not_Valid")
    assert bad_id.returncode == 2 and "invalid device id" in bad_id.stderr

    bad_config = tmp_path / "agent.toml"
    bad_config.write_text("inference_port = 'x'\n")
    config_error = run_cli("--config", str(bad_config), "status")
    assert config_error.returncode == 2 and "inference_port" in config_error.stderr

    usage = run_cli("frobnicate")
    assert usage.returncode == 2

    assert status(tmp_path / "device")["enrolled"] is False


def test_sigint_stops_the_agent_cleanly(fleet: MiniFleet, http_server: ArtifactServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "device"
    enroll(data_dir, http_server, fleet.device_id)
    agent = start_agent(data_dir, tmp_path)
    agent.signal(signal.SIGINT)
    assert agent.wait(20) == 0
    assert "event=agent_stopped" in agent.log_text(latest_run_only=True)
    agent.stop()


def test_agent_keeps_serving_while_the_broker_is_down(fleet: MiniFleet, mosquitto_factory: Any,
                                                       tmp_path: Path) -> None:
    broker = mosquitto_factory()
    with ArtifactServer(root_document=fleet.root_document, mqtt_url=broker.url) as server:
        data_dir = tmp_path / "device"
        enroll(data_dir, server, fleet.device_id)
        agent = start_agent(data_dir, tmp_path)
        try:
            watcher = Watcher(broker.host, broker.port, fleet.device_id)
            watcher.publish_directive(release_message(fleet, server, 1))
            watcher.wait_for_state(1, "succeeded")
            watcher.close()
            broker.stop()
            assert infer(data_dir, np.load(SAMPLE)[:1])["model_version"] == "1"
            broker.start()
            watcher = Watcher(broker.host, broker.port, fleet.device_id)
            watcher.publish_directive(release_message(fleet, server, 2))
            watcher.wait_for_state(2, "succeeded", timeout=90)
            watcher.close()
        finally:
            agent.stop()
