"""Many MQTT links on one network thread (the simulator's set-up), against a real Mosquitto."""

import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from agent.mqtt_link import MqttLink
from agent.mqtt_loop import SharedNetworkLoop
from agent.protocol.messages import PresenceMessage, StatusMessage
from agent.protocol.topics import TopicKind, device_topic, subscription
from fleet_server.processes import wait_until

LINKS = 30


class Fleet:
    def __init__(self, url: str, count: int) -> None:
        self.network = SharedNetworkLoop(min_reconnect_s=0.2, max_reconnect_s=1.0)
        self.received: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        self.links = [self._link(f"loop-dev-{index}", url) for index in range(count)]

    def _link(self, device_id: str, url: str) -> MqttLink:
        self.received[device_id] = []

        def on_directive(payload: bytes) -> None:
            with self.lock:
                self.received[device_id].append(payload)

        return MqttLink(device_id, "secret", url, on_directive,
                        lambda: PresenceMessage(device_id=device_id, online=False), network=self.network)

    def start(self) -> None:
        self.network.start()
        for link in self.links:
            link.start()

    def stop(self) -> None:
        for link in self.links:
            link.stop()
        self.network.stop()

    def all_connected(self) -> bool:
        return all(link.connected.is_set() for link in self.links)


class Observer:
    """Records device statuses and publishes directives."""

    def __init__(self, host: str, port: int) -> None:
        self.statuses: list[StatusMessage] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="loop-observer")
        self.client.on_message = lambda _c, _u, message: self.statuses.append(StatusMessage.decode(message.payload))
        self.client.on_connect = lambda client, *_: client.subscribe(subscription(TopicKind.STATUS, shared=False), 1)
        self.client.connect(host, port)
        self.client.loop_start()

    def directive(self, device_id: str, payload: bytes) -> None:
        self.client.publish(device_topic(device_id, TopicKind.DIRECTIVE), payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def broker(mosquitto_factory: Any) -> Any:
    return mosquitto_factory()


@pytest.fixture
def fleet(broker: Any) -> Iterator[Fleet]:
    fleet = Fleet(broker.url, LINKS)
    yield fleet
    fleet.stop()


def test_many_links_share_one_network_thread(fleet: Fleet, broker: Any) -> None:
    threads_before = threading.active_count()
    fleet.start()
    wait_until(fleet.all_connected, 20, "every link to connect")
    assert threading.active_count() - threads_before <= 2  # the shared loop, not one thread per link
    observer = Observer(broker.host, broker.port)
    try:
        wait_until(lambda: observer.client.is_connected(), 10, "the observer")
        for link in fleet.links:
            observer.directive(link.device_id, f"to {link.device_id}".encode())
        wait_until(lambda: all(fleet.received.values()), 20, "a directive at every link")
        assert all(payloads == [f"to {device}".encode()] for device, payloads in fleet.received.items())

        workers = [threading.Thread(target=link.publish_status, args=(StatusMessage(link.device_id, "idle", 0),))
                   for link in fleet.links]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        wait_until(lambda: len(observer.statuses) >= LINKS, 20, "a status from every link")
        assert {status.device_id for status in observer.statuses} == {link.device_id for link in fleet.links}
    finally:
        observer.close()


def test_links_reconnect_after_the_broker_restarts_and_get_what_was_queued(fleet: Fleet, broker: Any) -> None:
    fleet.start()
    wait_until(fleet.all_connected, 20, "every link to connect")
    broker.stop()
    wait_until(lambda: not any(link.connected.is_set() for link in fleet.links), 20, "every link to notice")
    broker.start()
    wait_until(fleet.all_connected, 30, "every link to reconnect")
    observer = Observer(broker.host, broker.port)
    try:
        target = fleet.links[0].device_id
        observer.directive(target, b"after the restart")
        wait_until(lambda: fleet.received[target], 20, "the directive after the restart")
    finally:
        observer.close()
