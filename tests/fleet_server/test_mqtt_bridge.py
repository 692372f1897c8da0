"""The MQTT bridge against a real Mosquitto: directives out, status and presence in."""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from agent.protocol import DeviceFacts, TopicKind, device_topic, load_trusted_root, verify_update
from agent.protocol.messages import DirectiveMessage, InstalledModel, PresenceMessage, StatusMessage
from tests.fleet_server.conftest import Api
from tests.fleet_server.mqtt_client import TestMqttClient, wait_for


@pytest.fixture
def broker_api(api_factory: Callable[..., Api], mosquitto: Any) -> Api:
    api = api_factory(mqtt_url=mosquitto.url)
    assert api.runtime.bridge.wait_connected(10)
    return api


@pytest.fixture
def device_client(mosquitto: Any) -> Iterator[Callable[[str], TestMqttClient]]:
    clients: list[TestMqttClient] = []

    def connect(client_id: str, clean_session: bool = True) -> TestMqttClient:
        client = TestMqttClient(mosquitto.host, mosquitto.port, client_id, clean_session)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def deploy(api: Api, release: dict, *device_ids: str) -> dict:
    response = api.post("/deployments", json={"release": {"name": release["name"], "version": release["version"]},
                                              "device_ids": list(device_ids)})
    assert response.status_code == 201, response.text
    return response.json()


def test_deployment_delivers_a_verifiable_retained_directive(broker_api: Api, device_client,
                                                            database_backend: str) -> None:
    device_id = f"mq-dev-1-{database_backend}"  # the shared broker keeps the other run's retained directive
    enrollment = broker_api.enroll(device_id).json()
    release = broker_api.released_model("mq-model")
    live = device_client(device_id)
    live.subscribe(device_topic(device_id, TopicKind.DIRECTIVE))
    deployment = deploy(broker_api, release, device_id)
    assert deployment["targets"][0]["published_at"] is not None

    message = live.next_message()
    assert message.qos == 1
    decoded = DirectiveMessage.decode(message.payload)
    now = datetime.now(UTC)
    update = verify_update(load_trusted_root(enrollment["root"], now), decoded.directive, decoded.release,
                           DeviceFacts(device_id, "x86_64", 2048, ("onnxruntime",)), last_sequence=0, now=now)
    assert update.directive.sequence == 1 and update.release.name == "mq-model"

    late = device_client("mq-late-observer")
    late.subscribe(device_topic(device_id, TopicKind.DIRECTIVE))
    retained = late.next_message()
    assert retained.retain and retained.payload == message.payload


def test_status_and_presence_are_recorded(broker_api: Api, device_client) -> None:
    broker_api.enroll("mq-dev-2")
    release = broker_api.released_model("mq-status")
    deployment = deploy(broker_api, release, "mq-dev-2")
    device = device_client("mq-dev-2")
    status_topic = device_topic("mq-dev-2", TopicKind.STATUS)
    started = datetime.now(UTC).timestamp()
    for offset, state in enumerate(("notified", "downloading", "verifying", "installing", "health_check",
                                    "succeeded")):
        device.publish(status_topic, StatusMessage("mq-dev-2", state, 1, "mq-status", release["version"],
                                                   "onnx-fp32", None, started + offset).encode())
    # a redelivered message (same state and timestamp) is not recorded twice
    device.publish(status_topic, StatusMessage("mq-dev-2", "succeeded", 1, "mq-status", release["version"],
                                               "onnx-fp32", None, started + 5).encode())

    def finished() -> dict | None:
        shown = broker_api.get(f"/deployments/{deployment['id']}").json()
        return shown if shown["targets"][0]["state"] == "succeeded" else None

    shown = wait_for(finished, 10, "the succeeded state")
    history = shown["targets"][0]["history"]
    assert [event["state"] for event in history] == ["notified", "downloading", "verifying", "installing",
                                                     "health_check", "succeeded"]
    assert history[0]["variant"] == "onnx-fp32"

    installed = InstalledModel("mq-status", release["version"], "onnx-fp32", release["variants"][0]["sha256"])
    device.publish(device_topic("mq-dev-2", TopicKind.PRESENCE),
                   PresenceMessage("mq-dev-2", True, "0.1.0", 12.5, (installed,), "succeeded").encode(), retain=True)
    online = wait_for(lambda: (d := broker_api.get("/devices/mq-dev-2").json())["online"] and d, 10, "online")
    assert online["current_model"] == installed.to_dict()
    assert online["uptime_s"] == 12.5 and online["last_seen"] is not None
    assert online["deployment_state"] == "succeeded"
    assert online["latest_deployment"]["state"] == "succeeded"

    device.publish(device_topic("mq-dev-2", TopicKind.PRESENCE),
                   PresenceMessage("mq-dev-2", False, timestamp=started).encode(), retain=True)
    wait_for(lambda: not broker_api.get("/devices/mq-dev-2").json()["online"], 10, "offline")


def test_a_failure_reason_is_kept(broker_api: Api, device_client) -> None:
    broker_api.enroll("mq-dev-3")
    release = broker_api.released_model("mq-reject")
    deployment = deploy(broker_api, release, "mq-dev-3")
    device = device_client("mq-dev-3")
    device.publish(device_topic("mq-dev-3", TopicKind.STATUS),
                   StatusMessage("mq-dev-3", "rejected", 1, reason="BadSignatureError: tampered").encode())
    target = wait_for(lambda: (t := broker_api.get(f"/deployments/{deployment['id']}").json()["targets"][0])
                      ["state"] == "rejected" and t, 10, "rejected")
    assert target["reason"] == "BadSignatureError: tampered"


def test_bad_messages_are_counted_and_dropped(broker_api: Api, device_client) -> None:
    broker_api.enroll("mq-dev-4")
    bridge = broker_api.runtime.bridge
    sender = device_client("mq-dev-4")
    status_topic = device_topic("mq-dev-4", TopicKind.STATUS)
    sender.publish(status_topic, b"\x00\x01 not json")
    sender.publish(status_topic, b'{"type": "status", "device_id": "mq-dev-4"}')
    sender.publish(status_topic, StatusMessage("someone-else", "failed", 1).encode())
    sender.publish(device_topic("mq-ghost", TopicKind.PRESENCE), PresenceMessage("mq-ghost", True).encode())
    sender.publish(device_topic("mq-dev-4", TopicKind.PRESENCE), PresenceMessage("mq-dev-4", True, "9.9").encode())
    wait_for(lambda: broker_api.get("/devices/mq-dev-4").json()["online"], 10, "the valid presence after bad ones")
    assert bridge.stats["malformed"] >= 2
    assert bridge.stats["device_mismatch"] >= 1
    assert bridge.stats["unknown_device"] >= 1
    assert broker_api.get("/devices/mq-dev-4").json()["deployment_state"] is None
    assert broker_api.get("/health").json()["mqtt_connected"] is True


def test_directive_is_republished_after_the_broker_comes_back(api_factory, mosquitto_factory) -> None:
    broker = mosquitto_factory()
    api = api_factory(mqtt_url=broker.url)
    assert api.runtime.bridge.wait_connected(10)
    api.enroll("mq-dev-5")
    release = api.released_model("mq-offline")
    broker.stop()
    wait_for(lambda: not api.runtime.bridge.connected, 10, "the bridge to notice the broker is gone")
    deployment = deploy(api, release, "mq-dev-5")
    assert deployment["targets"][0]["published_at"] is None
    broker.start()
    wait_for(lambda: api.get(f"/deployments/{deployment['id']}").json()["targets"][0]["published_at"], 30,
             "the directive to be republished")
    observer = TestMqttClient(broker.host, broker.port, "mq-observer-5")
    try:
        observer.subscribe(device_topic("mq-dev-5", TopicKind.DIRECTIVE))
        assert DirectiveMessage.decode(observer.next_message().payload).directive["signed"]["sequence"] == 1
    finally:
        observer.close()
