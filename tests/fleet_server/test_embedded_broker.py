"""The embedded amqtt broker: pub/sub, retained messages, persistent sessions, clean stop;
and the server on it delivering a directive."""

import socket

import pytest

from agent.protocol import TopicKind, device_topic
from agent.protocol.messages import DirectiveMessage
from fleet_server.errors import EmbeddedBrokerError
from fleet_server.mqtt.embedded_broker import EmbeddedBroker
from tests.fleet_server.conftest import Api
from tests.fleet_server.mqtt_client import TestMqttClient


@pytest.fixture
def broker():
    broker = EmbeddedBroker("127.0.0.1", 0)
    broker.start()
    yield broker
    broker.stop()


def test_publish_subscribe_and_retained(broker: EmbeddedBroker) -> None:
    address = broker.address
    publisher = TestMqttClient(address.host, address.port, "eb-publisher")
    subscriber = TestMqttClient(address.host, address.port, "eb-subscriber")
    try:
        publisher.publish("edgefleet/v1/eb-1/directive", b"kept", retain=True)
        subscriber.subscribe("edgefleet/v1/+/directive")
        retained = subscriber.next_message()
        assert (retained.topic, retained.payload, retained.retain) == ("edgefleet/v1/eb-1/directive", b"kept", True)
        publisher.publish("edgefleet/v1/eb-2/directive", b"live")
        live = subscriber.next_message()
        assert (live.topic, live.payload, live.qos) == ("edgefleet/v1/eb-2/directive", b"live", 1)
    finally:
        publisher.close()
        subscriber.close()


def test_persistent_session_queues_qos1_while_offline(broker: EmbeddedBroker) -> None:
    address = broker.address
    device = TestMqttClient(address.host, address.port, "eb-device", clean_session=False, username="eb-device",
                            password="secret")
    device.subscribe("edgefleet/v1/eb-device/directive")
    device.close()
    publisher = TestMqttClient(address.host, address.port, "eb-server")
    try:
        publisher.publish("edgefleet/v1/eb-device/directive", b"while offline")
        back = TestMqttClient(address.host, address.port, "eb-device", clean_session=False, username="eb-device",
                              password="secret")
        try:
            assert back.next_message().payload == b"while offline"
        finally:
            back.close()
    finally:
        publisher.close()


def test_stop_releases_the_port() -> None:
    broker = EmbeddedBroker("127.0.0.1", 0)
    port = broker.start().port
    broker.stop()
    with socket.create_server(("127.0.0.1", port)):
        pass


def test_a_taken_port_is_one_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(EmbeddedBrokerError, match=f"127.0.0.1:{port}"):
            EmbeddedBroker("127.0.0.1", port).start()


def test_server_on_the_embedded_broker_delivers_directives(api: Api) -> None:
    assert api.runtime.embedded_broker is not None and api.runtime.bridge.wait_connected(10)
    credential = api.enroll("eb-server-dev").json()["credential"]
    release = api.released_model("eb-model")
    address = api.runtime.broker_address
    device = TestMqttClient(address.host, address.port, "eb-server-dev", clean_session=False,
                            username="eb-server-dev", password=credential)
    try:
        device.subscribe(device_topic("eb-server-dev", TopicKind.DIRECTIVE))
        response = api.post("/deployments", json={"release": {"name": "eb-model", "version": release["version"]},
                                                  "device_ids": ["eb-server-dev"]})
        assert response.status_code == 201
        decoded = DirectiveMessage.decode(device.next_message().payload)
        assert decoded.directive["signed"]["device_id"] == "eb-server-dev"
        assert decoded.release == release["envelope"]
        assert api.get("/health").json() == {"status": "ok", "mqtt_connected": True}
    finally:
        device.close()


def test_restart_restores_retained_directives(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from fleet_server.app import create_app
    from tests.fleet_server.conftest import make_settings

    data_dir = tmp_path / "restart"
    with TestClient(create_app(make_settings(data_dir))) as client:
        first = Api(client, tmp_path)
        credential = first.enroll("eb-restart").json()["credential"]
        release = first.released_model("eb-restart-model")
        response = first.post("/deployments", json={"release": {"name": "eb-restart-model",
                                                                "version": release["version"]},
                                                    "device_ids": ["eb-restart"]})
        assert response.status_code == 201
    with TestClient(create_app(make_settings(data_dir))) as client:
        second = Api(client, tmp_path)
        assert second.runtime.bridge.wait_connected(10)
        address = second.runtime.broker_address
        topic = device_topic("eb-restart", TopicKind.DIRECTIVE)
        observer = TestMqttClient(address.host, address.port, "eb-restart", username="eb-restart",
                                  password=credential)
        try:
            observer.subscribe(topic)
            observer.next_message()  # live or retained, depending on who was first: the restore happened
        finally:
            observer.close()
        device = TestMqttClient(address.host, address.port, "eb-restart", clean_session=False,
                                username="eb-restart", password=credential)
        try:
            device.subscribe(topic)
            message = device.next_message()
            assert message.retain
            assert DirectiveMessage.decode(message.payload).directive["signed"]["sequence"] == 1
        finally:
            device.close()
