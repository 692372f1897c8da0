"""Two real server replicas on one PostgreSQL database and one Mosquitto.

Device messages reach the replicas through the shared subscription
(``$share/edgefleet/...``): the broker's own log shows every status message
delivered to exactly one replica, both replicas taking a share, and the
database holding each report once.
"""

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.protocol import TopicKind, device_topic
from agent.protocol.messages import StatusMessage
from fleet_server.client import FleetClient
from fleet_server.processes import wait_until
from tests.fleet_server.mqtt_client import TestMqttClient
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.replicas import ReplicaSet, start_replicas
from tests.integration.conftest import MODELS, publish_release, unique_model

pytestmark = pytest.mark.slow

INSTALL_STATES = ("notified", "downloading", "verifying", "installing", "health_check", "succeeded")
SENT_TO_SERVER = re.compile(r"Sending PUBLISH to (edgefleet-server-[0-9a-f]+) \(d\d, q1, r0, m\d+, "
                            r"'edgefleet/v1/[^/]+/status'")
RECEIVED_FROM = "Received PUBLISH from {client} "


@pytest.fixture
def broker(mosquitto_factory) -> MosquittoBroker:
    return mosquitto_factory(extra_config="log_type debug")  # debug: the broker logs every delivery


@pytest.fixture
def replicas(postgres, broker: MosquittoBroker, tmp_path: Path) -> Iterator[ReplicaSet]:
    replica_set = start_replicas(tmp_path / "replicas", 2, postgres.new_database("replicas"), broker.url)
    try:
        yield replica_set
    finally:
        replica_set.stop()


def enroll(server_url: str, bootstrap_token: str, device_id: str) -> None:
    body = {"device_id": device_id, "bootstrap_token": bootstrap_token, "arch": "x86_64", "ram_mb": 1024,
            "runtimes": ["onnxruntime"], "agent_version": "0.1.0", "tags": ["replicas"]}
    response = httpx.post(f"{server_url}/api/v1/devices/enroll", json=body, timeout=30)
    assert response.status_code == 201, response.text


def test_each_status_message_is_handled_by_one_replica_and_stored_once(replicas: ReplicaSet,
                                                                       broker: MosquittoBroker,
                                                                       tmp_path: Path) -> None:
    first, second = replicas.servers
    devices = [f"replica-dev-{number}" for number in range(8)]
    for number, device_id in enumerate(devices):  # as a load balancer would spread them
        enroll((first, second)[number % 2].url, replicas.bootstrap_token, device_id)
    with FleetClient(first.url, replicas.admin_token) as client:
        version = publish_release(client, unique_model(MODELS / "digits_mlp.onnx", tmp_path, "replicas"), "repl")
    with FleetClient(second.url, replicas.admin_token) as client:
        deployment = client.deploy("repl", version, device_ids=devices)

    publisher = TestMqttClient(broker.host, broker.port, "replica-test-devices")
    try:
        start = time.time()
        for device_id in devices:
            for step, state in enumerate(INSTALL_STATES):
                message = StatusMessage(device_id, state, 1, "repl", version, timestamp=start + step * 0.01)
                publisher.publish(device_topic(device_id, TopicKind.STATUS), message.encode())
    finally:
        publisher.close()
    sent = len(devices) * len(INSTALL_STATES)

    with FleetClient(first.url, replicas.admin_token) as client:
        final = client.wait_for_deployment(deployment["id"], timeout=60)
    assert [target["state"] for target in final["targets"]] == ["succeeded"] * len(devices)
    for target in final["targets"]:
        assert [event["state"] for event in target["history"]] == list(INSTALL_STATES), target["device_id"]

    def deliveries() -> Counter[str]:
        return Counter(SENT_TO_SERVER.findall(broker.process.log_text()))

    wait_until(lambda: sum(deliveries().values()) >= sent, 10, "the broker's log of the deliveries")
    log = broker.process.log_text()
    assert log.count(RECEIVED_FROM.format(client="replica-test-devices")) == sent
    by_replica = deliveries()
    assert sum(by_replica.values()) == sent, by_replica  # each message went to exactly one replica
    assert len(by_replica) == 2 and min(by_replica.values()) > 0, by_replica  # and both took a share
