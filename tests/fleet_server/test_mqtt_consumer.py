"""The server's consumer connection against a real Mosquitto (and a scripted fake broker for what
Mosquitto never does: silence, a bad topic, a packet above the memory guard)."""

import queue
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from fleet_server.mqtt import packets
from fleet_server.mqtt.broker_url import BrokerAddress, parse_mqtt_url
from fleet_server.mqtt.consumer import ConsumerConnection
from fleet_server.pki import cert_pem, init_ca, key_pem
from fleet_server.processes import LOOPBACK
from tests.fleet_server.mqtt_client import TestMqttClient, wait_for
from tests.helpers.mosquitto import MosquittoBroker

Message = tuple[str, bytes, int | None]


class Consumer:
    """A ``ConsumerConnection`` whose messages land in a queue (acknowledged when ``auto_ack``)."""

    def __init__(self, address: BrokerAddress, client_id: str, topics: list[str], auto_ack: bool = True,
                 **options: object) -> None:
        self.messages: queue.Queue[Message] = queue.Queue()
        self.connects = 0
        self.auto_ack = auto_ack
        self.connection = ConsumerConnection(address, client_id, topics, on_message=self._on_message,
                                             on_connect=self._on_connect, reconnect_min_s=0.1,
                                             reconnect_max_s=0.5, **options)  # type: ignore[arg-type]
        self.connection.start()

    def _on_connect(self) -> None:
        self.connects += 1

    def _on_message(self, topic: str, payload: bytes, packet_id: int | None) -> None:
        self.messages.put((topic, payload, packet_id))
        if self.auto_ack and packet_id is not None:
            self.connection.ack(packet_id)

    def wait_connected(self, connects: int = 1) -> None:
        wait_for(lambda: self.connection.connected and self.connects >= connects, 15, "consumer subscribed")

    def until(self, topic: str) -> list[Message]:
        """Every message up to and including the first on ``topic``."""
        seen: list[Message] = []
        while not seen or seen[-1][0] != topic:
            seen.append(self.messages.get(timeout=15))
        return seen


@pytest.fixture
def publisher(mosquitto: MosquittoBroker) -> Iterator[TestMqttClient]:
    client = TestMqttClient(mosquitto.host, mosquitto.port, "consumer-test-publisher")
    yield client
    client.close()


def test_messages_are_delivered_and_acked_ones_are_not_redelivered(mosquitto: MosquittoBroker,
                                                                   publisher: TestMqttClient) -> None:
    address = parse_mqtt_url(mosquitto.url)
    consumer = Consumer(address, "consumer-acked", ["acked/#"], clean_session=False)
    consumer.wait_connected()
    for index in range(500):
        publisher.publish(f"acked/{index}", b"%d" % index)
    publisher.publish("acked/huge", b"h" * (3 << 20))  # above the 1 MiB warning, delivered all the same
    received = consumer.until("acked/huge")
    assert [payload for _topic, payload, _id in received[:-1]] == [b"%d" % i for i in range(500)]
    assert received[-1][1] == b"h" * (3 << 20) and all(packet_id for *_rest, packet_id in received)
    consumer.connection.stop()
    publisher.publish("acked/marker", b"after")  # queued in the persistent session
    again = Consumer(address, "consumer-acked", ["acked/#"], clean_session=False)
    assert [(topic, payload) for topic, payload, _id in again.until("acked/marker")] == [("acked/marker", b"after")]
    again.connection.stop()


def test_unacked_messages_are_redelivered_after_a_reconnect(mosquitto: MosquittoBroker,
                                                           publisher: TestMqttClient) -> None:
    address = parse_mqtt_url(mosquitto.url)
    consumer = Consumer(address, "consumer-unacked", ["unacked/#"], auto_ack=False, clean_session=False)
    consumer.wait_connected()
    for index in range(5):
        publisher.publish(f"unacked/{index}", b"%d" % index)
    first = consumer.until("unacked/4")
    consumer.connection.ack(first[0][2])  # only the first one is stored
    consumer.connection.stop()
    again = Consumer(address, "consumer-unacked", ["unacked/#"], clean_session=False)
    assert [topic for topic, _payload, _id in again.until("unacked/4")] == [f"unacked/{i}" for i in range(1, 5)]
    assert again.connection.redelivered == 4  # resent with the DUP flag
    again.connection.stop()


def test_unsubscribe_stops_one_filter(mosquitto: MosquittoBroker, publisher: TestMqttClient) -> None:
    consumer = Consumer(parse_mqtt_url(mosquitto.url), "consumer-unsub", ["keep/#", "drop/#"])
    consumer.wait_connected()
    assert consumer.connection.unsubscribe(["drop/#"])
    publisher.publish("drop/x", b"gone")
    publisher.publish("keep/x", b"kept")
    assert [(topic, payload) for topic, payload, _id in consumer.until("keep/x")] == [("keep/x", b"kept")]
    consumer.connection.stop()


def test_keepalive_pings_keep_the_connection(mosquitto: MosquittoBroker, publisher: TestMqttClient) -> None:
    consumer = Consumer(parse_mqtt_url(mosquitto.url), "consumer-ping", ["ping/#"], keepalive=1)
    consumer.wait_connected()
    wait_for(lambda: consumer.connection.pings >= 4, 15, "four PINGREQs")
    assert consumer.connects == 1  # each answered: no reconnect
    publisher.publish("ping/x", b"alive")
    assert consumer.until("ping/x")[-1][1] == b"alive"
    consumer.connection.stop()


def test_reconnects_after_the_broker_restarts(mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    broker = mosquitto_factory()
    consumer = Consumer(parse_mqtt_url(broker.url), "consumer-restart", ["restart/#"], clean_session=False)
    consumer.wait_connected()
    broker.restart()
    consumer.wait_connected(connects=2)
    publisher = TestMqttClient(broker.host, broker.port, "restart-publisher")
    try:
        publisher.publish("restart/x", b"back")
        assert consumer.until("restart/x")[-1][1] == b"back"
    finally:
        publisher.close()
        consumer.connection.stop()


def test_tls_with_a_password(tmp_path: Path, mosquitto_factory: Callable[..., MosquittoBroker],
                             caplog: pytest.LogCaptureFixture) -> None:
    ca = init_ca(tmp_path / "ca")
    certificate, key = ca.issue_server([LOOPBACK], timedelta(days=1))
    (tmp_path / "server.pem").write_bytes(cert_pem(certificate))
    (tmp_path / "server.key").write_bytes(key_pem(key))
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "server", "s3cret"], check=True)
    broker = mosquitto_factory(extra_config=f"cafile {ca.cert_path}\ncertfile {tmp_path / 'server.pem'}\n"
                               f"keyfile {tmp_path / 'server.key'}\npassword_file {passwords}\n"
                               "allow_anonymous false")
    good = BrokerAddress(LOOPBACK, broker.port, tls=True, username="server", password="s3cret",
                         ca_file=str(ca.cert_path))
    consumer = Consumer(good, "consumer-tls", ["tls/#"])
    refused = Consumer(BrokerAddress(LOOPBACK, broker.port, tls=True, username="server", password="wrong",
                                     ca_file=str(ca.cert_path)), "consumer-tls-refused", ["tls/#"])
    try:
        consumer.wait_connected()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-pub", protocol=mqtt.MQTTv311)
        client.username_pw_set("server", "s3cret")
        client.tls_set(ca_certs=str(ca.cert_path))
        client.connect(LOOPBACK, broker.port)
        client.loop_start()
        client.publish("tls/x", b"secret payload", qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
        assert consumer.until("tls/x")[-1][1] == b"secret payload"
        wait_for(lambda: "event=mqtt_connect_refused" in caplog.text, 15, "the wrong password refused")
        assert refused.connects == 0 and "wrong" not in caplog.text and "s3cret" not in caplog.text
    finally:
        consumer.connection.stop()
        refused.connection.stop()


class FakeBroker:
    """Accepts connections on a loopback port and plays ``script(connection)`` on each."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.server = socket.create_server((LOOPBACK, 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.received: queue.Queue[bytes] = queue.Queue()
        self._script = script
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._play, args=(connection,), daemon=True).start()

    def _play(self, connection: socket.socket) -> None:
        with connection:
            try:
                self._script(connection)
                while data := connection.recv(4096):
                    self.received.put(data)
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()


def handshake(connection: socket.socket) -> None:
    """Read the CONNECT and SUBSCRIBE, answer CONNACK and SUBACK."""
    connection.recv(4096)
    connection.sendall(b"\x20\x02\x00\x00")
    subscribe = connection.recv(4096)
    connection.sendall(b"\x90\x03" + subscribe[2:4] + b"\x01")


@pytest.mark.parametrize("then", [b"", b"\x30" + packets.encode_remaining_length(32 << 20)],
                         ids=["silent", "oversized"])
def test_a_silent_or_oversized_broker_is_left_and_reconnected(then: bytes) -> None:
    def script(connection: socket.socket) -> None:
        handshake(connection)
        connection.sendall(then)

    fake = FakeBroker(script)
    consumer = Consumer(BrokerAddress(LOOPBACK, fake.port), "consumer-fake", ["x/#"], keepalive=1)
    try:
        consumer.wait_connected(connects=2)
        assert fake.accepted >= 2
    finally:
        consumer.connection.stop()
        fake.close()


def test_a_topic_that_is_not_utf8_is_dropped_and_acknowledged() -> None:
    def script(connection: socket.socket) -> None:
        handshake(connection)
        bad = b"\x00\x03a\xff/" + b"\x00\x09" + b"payload"
        good = b"\x00\x03a/b" + b"\x00\x0a" + b"fine"
        connection.sendall(b"\x32" + bytes((len(bad),)) + bad + b"\x32" + bytes((len(good),)) + good)

    fake = FakeBroker(script)
    bad_topics: list[bytes] = []
    consumer = Consumer(BrokerAddress(LOOPBACK, fake.port), "consumer-utf8", ["a/#"],
                        on_bad_topic=bad_topics.append)
    try:
        assert consumer.until("a/b") == [("a/b", b"fine", 10)]
        assert bad_topics == [b"a\xff/"]
        acks = b""
        while len(acks) < 8:
            acks += fake.received.get(timeout=10)
        assert acks[:8] == packets.puback_packet(9) + packets.puback_packet(10)
    finally:
        consumer.connection.stop()
        fake.close()
