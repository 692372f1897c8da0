"""Two real server replicas on one PostgreSQL database and one Mosquitto, behind nginx
configured as docs/deployment.md says (load balancing, artifacts from the shared store).

- Device messages reach the replicas through the shared subscription
  (``$share/edgefleet/...``): the broker's own log shows every status message delivered
  to exactly one replica, both replicas taking a share, and the database holds each
  report once.
- Exactly one replica drives rollouts (the controller lease): SIGKILLed in the middle of
  a rollout, the leader is replaced by the other replica within seconds, which drains the
  dead replica's MQTT session (its share of the device reports), notifies the next phase,
  no device gets a second directive (per-device sequence numbers), and the rollout completes.
"""

import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from agent.protocol import TopicKind, device_topic
from agent.protocol.messages import StatusMessage
from fleet_server.client import FleetClient
from fleet_server.localfleet import LocalServer
from fleet_server.processes import wait_until
from tests.fleet_server.mqtt_client import TestMqttClient
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.nginx import NginxServer
from tests.helpers.replicas import ReplicaSet, start_replicas
from tests.integration.conftest import MODELS, publish_release, unique_model
from tests.integration.simulated_fleet import SimulatedFleet, linear_classifier

pytestmark = pytest.mark.slow

LEASE_TTL_S = 3
SERVER_ENV = {"EDGEFLEET_ROLLOUT_TICK_S": "0.3", "EDGEFLEET_ROLLOUT_LEASE_TTL_S": str(LEASE_TTL_S),
              "EDGEFLEET_ROLLOUT_HEALTH_INTERVAL_S": "1",
              "EDGEFLEET_REPLICA_HEARTBEAT_S": "0.5", "EDGEFLEET_REPLICA_STALE_S": str(LEASE_TTL_S)}
AGENT_ENV = {"EDGEFLEET_AGENT_HEARTBEAT_INTERVAL_S": "5", "EDGEFLEET_AGENT_DOWNLOAD_RETRY_BASE_S": "0.2",
             "EDGEFLEET_AGENT_DOWNLOAD_RETRY_MAX_S": "1"}
INSTALL_STATES = ("notified", "downloading", "verifying", "installing", "health_check", "succeeded")
SENT_TO_SERVER = re.compile(r"Sending PUBLISH to (edgefleet-server-[0-9a-f]+) \(d\d, q1, r0, m\d+, "
                            r"'edgefleet/v1/[^/]+/status'")
LEADING = "event=rollout_controller_leading"


@dataclass
class Cluster:
    broker: MosquittoBroker
    replicas: ReplicaSet
    balancer: NginxServer

    @property
    def url(self) -> str:  # what devices and operators use: the load balancer
        return self.balancer.url

    def client(self) -> FleetClient:
        return FleetClient(self.url, self.replicas.admin_token)


@pytest.fixture(scope="module")
def cluster(postgres, tmp_path_factory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("replicas")
    broker = MosquittoBroker(root / "broker", extra_config="log_type debug").start()  # logs every delivery
    replicas: ReplicaSet | None = None
    balancer: NginxServer | None = None
    try:
        replicas = start_replicas(root, 2, postgres.new_database("replicas"), broker.url, **SERVER_ENV)
        balancer = NginxServer(root / "nginx", root / "artifacts", upstreams=[s.url for s in replicas.servers])
        balancer.start()
        yield Cluster(broker, replicas, balancer)
    finally:
        if balancer is not None:
            balancer.stop()
        if replicas is not None:
            replicas.stop()
        broker.stop()


def enroll(url: str, bootstrap_token: str, device_id: str) -> None:
    body = {"device_id": device_id, "bootstrap_token": bootstrap_token, "arch": "x86_64", "ram_mb": 1024,
            "runtimes": ["onnxruntime"], "agent_version": "0.1.0", "tags": ["replicas"]}
    response = httpx.post(f"{url}/api/v1/devices/enroll", json=body, timeout=30)
    assert response.status_code == 201, response.text


def test_each_status_message_is_handled_by_one_replica_and_stored_once(cluster: Cluster, tmp_path: Path) -> None:
    devices = [f"replica-dev-{number}" for number in range(8)]
    for device_id in devices:  # nginx spreads them over the replicas
        enroll(cluster.url, cluster.replicas.bootstrap_token, device_id)
    with cluster.client() as client:
        version = publish_release(client, unique_model(MODELS / "digits_mlp.onnx", tmp_path, "replicas"), "repl")
        deployment = client.deploy("repl", version, device_ids=devices)

    publisher = TestMqttClient(cluster.broker.host, cluster.broker.port, "replica-test-devices")
    try:
        start = time.time()
        for device_id in devices:
            for step, state in enumerate(INSTALL_STATES):
                message = StatusMessage(device_id, state, 1, "repl", version, timestamp=start + step * 0.01)
                publisher.publish(device_topic(device_id, TopicKind.STATUS), message.encode())
    finally:
        publisher.close()
    sent = len(devices) * len(INSTALL_STATES)

    with cluster.client() as client:
        final = client.wait_for_deployment(deployment["id"], timeout=60)
    assert [target["state"] for target in final["targets"]] == ["succeeded"] * len(devices)
    for target in final["targets"]:
        assert [event["state"] for event in target["history"]] == list(INSTALL_STATES), target["device_id"]

    def deliveries() -> Counter[str]:
        return Counter(SENT_TO_SERVER.findall(cluster.broker.process.log_text()))

    wait_until(lambda: sum(deliveries().values()) >= sent, 10, "the broker's log of the deliveries")
    assert cluster.broker.process.log_text().count("Received PUBLISH from replica-test-devices ") == sent
    by_replica = deliveries()
    assert sum(by_replica.values()) == sent, by_replica  # each message went to exactly one replica
    assert len(by_replica) == 2 and min(by_replica.values()) > 0, by_replica  # and both took a share


def leader(replicas: ReplicaSet) -> LocalServer:
    def find() -> LocalServer | None:
        leading = [server for server in replicas.servers if server.process is not None and server.process.running
                   and LEADING in server.process.log_text()]
        return leading[0] if len(leading) == 1 else None

    return wait_until(find, 30, "exactly one replica leading the rollout controller")


def client_id(server: LocalServer) -> str:
    return "edgefleet-server-" + (server.data_dir / "server_id").read_text().strip()


def publisher_of(broker: MosquittoBroker, device_id: str) -> list[str]:
    """The MQTT clients that published directives for ``device_id``, per the broker's log."""
    pattern = re.compile(rf"Received PUBLISH from (\S+) \(d\d, q1, r1, m\d+, 'edgefleet/v1/{device_id}/directive'")
    return sorted(set(pattern.findall(broker.process.log_text())))


def test_a_killed_leader_is_replaced_within_seconds_and_no_device_is_notified_twice(cluster: Cluster,
                                                                                    tmp_path: Path) -> None:
    endpoint = SimpleNamespace(url=cluster.url, bootstrap_token=cluster.replicas.bootstrap_token)  # the LB
    sims = SimulatedFleet(endpoint, tmp_path, "failover", per_process=10, processes=1,  # type: ignore[arg-type]
                          tag="failover", env=AGENT_ENV)
    try:
        ids = sims.start()
        with cluster.client() as client:
            version = publish_release(client, linear_classifier(tmp_path, "failover-model"), "failover-model")
            before = {d["device_id"]: d["directive_sequence"] for d in client.devices() if d["device_id"] in ids}
            first = leader(cluster.replicas)
            created = client._request("POST", "/rollouts", json={
                "release": {"name": "failover-model", "version": version}, "target": {"tags": ["failover"]},
                "phases": [{"share": 0.3, "bake_s": 6}, {"share": 1.0, "bake_s": 0}]})

            def phase_one_baking() -> bool:
                rollout = client._request("GET", f"/rollouts/{created['id']}")
                return rollout["current_phase"] == 0 and rollout["devices"].get("succeeded", 0) == 3

            wait_until(phase_one_baking, 60, "phase 1 installed and baking", interval=0.2)
            assert first.process is not None
            first.process.kill()  # SIGKILL mid-rollout: no lease release, the lease has to expire
            killed_at = time.monotonic()
            survivor = next(server for server in cluster.replicas.servers if server is not first)
            assert survivor.process is not None
            survivor.process.wait_for_log(LEADING, timeout=LEASE_TTL_S + 30)
            takeover_s = time.monotonic() - killed_at

            final = wait_until(lambda: (r := client._request("GET", f"/rollouts/{created['id']}"))["state"]
                               in ("succeeded", "aborted", "rolled_back") and r, 120, "the rollout to finish")
            assert final["state"] == "succeeded" and final["devices"] == {"succeeded": len(ids)}, final["devices"]
            assert all(device["attempts"] == 1 for device in final["device_details"])
            after = {d["device_id"]: d["directive_sequence"] for d in client.devices() if d["device_id"] in ids}
        assert after == {device_id: before[device_id] + 1 for device_id in ids}, "a device got a second directive"
        assert all(sims.agent_state(d)["last_accepted_sequence"] == after[d] for d in ids)
        # The dead replica's share of the device reports, queued in its persistent session, was drained:
        assert survivor.process is not None
        assert f"event=session_drained client_id={client_id(first)} " in survivor.process.log_text()
        phase_two = [d["device_id"] for d in final["device_details"] if d["phase"] == 1]
        # directives leave on each replica's publishing connection (fleet_server/mqtt/publish_link.py)
        survivor_link = client_id(survivor) + "-pub"
        assert len(phase_two) == 7 and all(publisher_of(cluster.broker, d) == [survivor_link] for d in phase_two)
        print(f"controller takeover after SIGKILL: {takeover_s:.1f} s (lease ttl {LEASE_TTL_S} s)")
    finally:
        sims.stop()
