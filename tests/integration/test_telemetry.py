"""Telemetry end to end: real server, real agent processes, a real Mosquitto.

A model compressed on the server gets a reference profile from its calibration data; the
release carries it, the agents fetch it with the model and bin live inputs on its edges.
- Inputs shifted away from the calibration data on one device raise a drift alert for that
  device and its cohorts, and the alert webhook is called; the device fed reference inputs
  raises none.
- With the broker stopped, a device keeps serving and buffering; once the broker is back every
  window is stored exactly once, in sequence, and every request is counted.

The server subscribes plainly (``EDGEFLEET_MQTT_SHARED_SUBSCRIPTION=false``), as one server on
Mosquitto should (README, Reliability): Mosquitto 2.0 restores a persistent session's plain
subscriptions after a restart but not its ``$share`` ones, so with ``$share`` the backlog a device
publishes between the broker's restart and the server's re-subscription is acknowledged by the
broker and dropped (the device reconnects first more often than not: the server's backoff is longer).
"""

import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from fleet_server.client import FleetClient
from fleet_server.localfleet import LocalAgent, LocalServer
from fleet_server.processes import wait_until
from tests.fleet_server.webhook_server import WebhookServer, webhook_server
from tests.integration.conftest import MODELS, start_server, unique_model

pytestmark = pytest.mark.slow

TAG = "tele-e2e"
SERVER_ENV = {
    "EDGEFLEET_MONITOR_INTERVAL_S": "1", "EDGEFLEET_DRIFT_BUCKET_S": "4", "EDGEFLEET_DRIFT_WINDOWS": "4",
    "EDGEFLEET_DRIFT_ALERT_WINDOWS": "2", "EDGEFLEET_DRIFT_MIN_SAMPLES": "150", "EDGEFLEET_OFFLINE_AFTER_S": "600",
    "EDGEFLEET_MQTT_SHARED_SUBSCRIPTION": "false",  # one server on Mosquitto, which is restarted (see above)
}
AGENT_ENV = {"EDGEFLEET_AGENT_TELEMETRY_WINDOW_S": "1", "EDGEFLEET_AGENT_HEARTBEAT_INTERVAL_S": "5"}


def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().data / 16.0).astype(np.float32)


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookServer]:
    with webhook_server() as server:
        yield server


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.helpers.mosquitto import MosquittoBroker

    broker = MosquittoBroker(tmp_path_factory.mktemp("tele-broker")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def server(broker: Any, hooks: WebhookServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = start_server(tmp_path_factory.mktemp("tele-server"), broker.url, **SERVER_ENV,
                          EDGEFLEET_ALERT_WEBHOOKS=f"{hooks.url}/alerts")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fleet(server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LocalAgent]]:
    """Two agents tagged TAG serving the digits model, released with a reference profile."""
    root = tmp_path_factory.mktemp("tele-agents")
    agents = {}
    for role in ("steady", "drifting"):
        agent = LocalAgent(f"tele-{role}-{secrets.token_hex(2)}", root / role, extra_env=AGENT_ENV)
        agent.enroll(server.url, server.bootstrap_token, tags=(TAG,))
        agent.start()
        agent.wait_serving()
        agents[role] = agent
    data = digits()
    calibration = root / "calibration.npy"
    np.save(calibration, data[:1000])
    with FleetClient(server.url, server.admin_token, timeout=120) as client:
        version = client.upload_model(unique_model(MODELS / "digits_mlp.onnx", root, "tele"), "tele-digits")["version"]
        dataset = client.upload_dataset(calibration)["sha256"]
        job = client.compress("tele-digits", version, {"calibration_sha256": dataset, "variants": ["onnx-fp16"],
                                                         "latency_runs": 3, "max_evaluation_rows": 200})
        wait_until(lambda: client.compression_job(job["id"])["status"] in ("succeeded", "failed"), 180,
                   "the compression job")
        assert client.compression_job(job["id"])["status"] == "succeeded", client.compression_job(job["id"])
        release = client.create_release("tele-digits", version)
        assert release["envelope"]["signed"]["reference_profile_sha256"]
        deployment = client.deploy("tele-digits", version, tags=[TAG])
        finished = client.wait_for_deployment(deployment["id"], timeout=120)
        assert {t["state"] for t in finished["targets"]} == {"succeeded"}, finished
    try:
        yield agents
    finally:
        for agent in agents.values():
            agent.stop()


def infer(agent: LocalAgent, rows: np.ndarray) -> None:
    body = json.dumps({"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                                   "data": rows.ravel().tolist()}]}).encode()
    request = urllib.request.Request(f"{agent.inference_url}/v2/models/tele-digits/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def alerts(server: LocalServer, **params: str) -> list[dict[str, Any]]:
    with FleetClient(server.url, server.admin_token) as client:
        return client.alerts(params)


def database_rows(server: LocalServer, device_id: str) -> list[tuple[int, int]]:
    engine = create_engine(f"sqlite:///{server.data_dir / 'edgefleet.db'}")
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(
                "SELECT seq, requests FROM telemetry_window WHERE device_id = :d ORDER BY seq"), {"d": device_id})]
    finally:
        engine.dispose()


def settled_rows(server: LocalServer, device_id: str) -> list[tuple[int, int]]:
    """The device's stored windows once no more requests arrive (earlier traffic fully reported)."""
    previous = None
    while True:
        rows = database_rows(server, device_id)
        total = sum(requests for _, requests in rows)
        if total == previous:
            return rows
        previous = total
        time.sleep(2.5)


def test_injected_drift_alerts_device_and_cohort_and_calls_the_webhook(server: LocalServer, fleet: dict[str, Any],
                                                                       hooks: WebhookServer) -> None:
    data = digits()[1000:]
    rng = np.random.default_rng(5)
    deadline = time.monotonic() + 90
    drifting, steady = fleet["drifting"].device_id, fleet["steady"].device_id

    def raised() -> bool:
        subjects = {(a["scope"], a["subject"]) for a in alerts(server, state="firing", kind="drift")}
        return {("device", drifting), ("cohort", TAG)} <= subjects

    while not raised():
        assert time.monotonic() < deadline, alerts(server)
        batch = data[rng.integers(0, len(data), 16)]
        infer(fleet["steady"], batch)
        infer(fleet["drifting"], np.clip(1.0 - batch, 0, 1))  # inverted strokes: far from the calibration data
        time.sleep(0.05)
    firing = alerts(server, state="firing", kind="drift")
    assert all(a["subject"] != steady for a in firing)
    device_alert = next(a for a in firing if a["subject"] == drifting)
    assert device_alert["model_name"] == "tele-digits" and device_alert["details"]["top_features"]
    wait_until(lambda: any(event["subject"] == drifting for event in hooks.events("/alerts")), 20,
               "the webhook call for the drifting device")
    event = next(event for event in hooks.events("/alerts") if event["subject"] == drifting)
    assert event["event"] == "firing" and event["kind"] == "drift"


def test_an_offline_device_buffers_and_every_window_arrives_once_in_order(server: LocalServer, broker: Any,
                                                                          fleet: dict[str, Any]) -> None:
    agent = fleet["steady"]
    rows = digits()[1000:1016]
    sent = 0

    def send(batches: int) -> None:
        nonlocal sent
        for _ in range(batches):
            infer(agent, rows)
            sent += 1
            time.sleep(0.02)

    stored_before = settled_rows(server, agent.device_id)
    requests_before = sum(requests for _, requests in stored_before)
    broker.stop()
    try:
        send(150)  # about 3 s of traffic, several windows, all buffered on the device
    finally:
        broker.start()
    send(20)
    # Both the agent and the server reconnect with exponential backoff (server up to 30 s between tries), so
    # on a loaded machine the backlog can take a while to start flowing.
    wait_until(lambda: sum(r for _, r in database_rows(server, agent.device_id)) - requests_before >= sent, 150,
               "every request of the outage stored")
    time.sleep(2.5)  # windows still in flight settle
    stored = database_rows(server, agent.device_id)
    seqs = [seq for seq, _ in stored]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # each window exactly once, none missing
    assert sum(requests for _, requests in stored) - requests_before == sent
    assert len(seqs) > len(stored_before) + 3
