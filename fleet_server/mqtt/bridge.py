"""The server's MQTT client: consumes device ``status``/``presence``/``telemetry``
and publishes directives.

Messages arrive on a ``ConsumerConnection`` (``fleet_server.mqtt.consumer``, a
lean MQTT 3.1.1 client with one I/O thread that reconnects with exponential
backoff by itself); directives go out on a paho ``PublishLink``. Each QoS 1 message is
validated with ``agent.protocol.messages`` in the callback and handed to a
writer thread that stores it in a batch (``status_ingest`` for status and
presence, ``telemetry_ingest`` for telemetry), so it is acknowledged only after
its batch is committed. Malformed
messages, messages whose device id differs from the topic's and messages from
unknown devices are counted and dropped with a log line; nothing a device
sends can stop the consumer.
"""

import logging
import secrets
import threading
from collections import Counter
from collections.abc import Callable

import paho.mqtt.client as mqtt
from sqlalchemy import Engine

from agent.protocol import ProtocolError, TopicKind, parse_topic, subscription
from agent.protocol.messages import PresenceMessage, StatusMessage
from fleet_server.mqtt.broker_url import BrokerAddress
from fleet_server.mqtt.consumer import ConsumerConnection
from fleet_server.mqtt.publish_link import PublishLink
from fleet_server.mqtt.status_ingest import StatusWriter
from fleet_server.mqtt.telemetry_ingest import TelemetryIngestor

logger = logging.getLogger(__name__)

CONSUMED_KINDS = (TopicKind.STATUS, TopicKind.PRESENCE, TopicKind.TELEMETRY)
TELEMETRY_SUFFIX = "/" + TopicKind.TELEMETRY.value


def _no_ack() -> None:
    """QoS 0 messages are not acknowledged."""


class MqttBridge:
    def __init__(self, address: BrokerAddress, engine: Engine, shared_subscription: bool = True,
                 telemetry: TelemetryIngestor | None = None, client_id: str | None = None,
                 persistent_session: bool = False, owns_telemetry: bool = True) -> None:
        self.telemetry = telemetry  # None: telemetry is counted and dropped
        self.owns_telemetry = owns_telemetry  # False: the ingestor is another bridge's (a session drain)
        self.address = address
        self.engine = engine
        self.shared_subscription = shared_subscription
        # A stable client id with a persistent session (external broker): what devices report while the
        # server is down is queued by the broker and delivered when the server reconnects.
        self.client_id = client_id or f"edgefleet-server-{secrets.token_hex(6)}"
        self.persistent_session = persistent_session
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self.status_writer = StatusWriter(engine, self._count)
        self._connected = threading.Event()
        self._on_connected: list[Callable[[], None]] = []
        self.consumer = self._make_consumer()
        # directives go out on a connection of their own (see fleet_server.mqtt.publish_link)
        self.link = PublishLink(address, f"{self.client_id}-pub", self._run_hooks_if_ready)

    def _make_consumer(self) -> ConsumerConnection:
        topics = [subscription(kind, shared=self.shared_subscription) for kind in CONSUMED_KINDS]
        return ConsumerConnection(self.address, self.client_id, topics, clean_session=not self.persistent_session,
                                  on_message=self._on_message, on_connect=self._on_connect,
                                  on_disconnect=self._on_disconnect,
                                  on_bad_topic=lambda _topic: self._count("malformed"))

    # -- lifecycle -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and self.link.connected

    def add_connect_hook(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` in a worker thread after every (re)connect and subscription (of either
        connection, once both are up)."""
        self._on_connected.append(hook)

    def start(self) -> None:
        logger.info("server event=mqtt_connecting url=%s client_id=%s", self.address.url, self.client_id)
        if self.telemetry is not None and self.owns_telemetry:
            self.telemetry.start()
        self.status_writer.start()
        self.consumer.start()
        self.link.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        if self.persistent_session and self.shared_subscription and self._connected.is_set():
            self._leave_share_group()
        if self._connected.is_set() and not self.status_writer.flush():  # acknowledged while connected
            logger.warning("server event=status_flush_timeout pending=%d", self.status_writer.pending)
        self._connected.clear()
        self.link.stop()
        self.consumer.stop()
        self.status_writer.stop()
        if self.telemetry is not None and self.owns_telemetry:
            self.telemetry.stop()
        logger.info("server event=mqtt_stopped stats=%s", dict(self.stats))

    def _leave_share_group(self, timeout: float = 2.0) -> None:
        """On a clean stop, unsubscribe first: the broker would otherwise go on queueing this replica's share
        of the devices' messages in its persistent session (a crashed replica keeps its subscriptions, and
        gets what was queued when it comes back)."""
        if not self.consumer.unsubscribe([subscription(kind, shared=True) for kind in CONSUMED_KINDS], timeout):
            logger.warning("server event=mqtt_unsubscribe_timeout timeout_s=%.1f", timeout)

    def publish(self, topic: str, payload: bytes, retain: bool = True) -> mqtt.MQTTMessageInfo:
        return self.link.publish(topic, payload, retain)

    # -- consumer callbacks (its I/O thread) ------------------------------------

    def _on_connect(self) -> None:
        self._connected.set()
        logger.info("server event=mqtt_connected url=%s subscriptions=%s", self.address.url,
                    ",".join(self.consumer.topics))
        self._run_hooks_if_ready()

    def _run_hooks_if_ready(self) -> None:
        if not self.connected:  # the other connection's callback runs them once it is up
            return
        for hook in self._on_connected:
            threading.Thread(target=self._run_hook, args=(hook,), name="edgefleet-mqtt-connect-hook",
                             daemon=True).start()

    @staticmethod
    def _run_hook(hook: Callable[[], None]) -> None:
        try:
            hook()
        except Exception:
            logger.exception("server event=mqtt_connect_hook_failed hook=%s", getattr(hook, "__name__", hook))

    def _on_disconnect(self, reason: str) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected:
            logger.warning("server event=mqtt_disconnected url=%s reason=%s", self.address.url, reason)

    def _ack_later(self, packet_id: int | None) -> Callable[[], None]:
        """Acknowledge ``packet_id`` (None: QoS 0, nothing to acknowledge) once called, on the connection
        it arrived on (an ack that outlived a clean session's connection is dropped)."""
        if packet_id is None:
            return _no_ack
        consumer, connection = self.consumer, self.consumer.connections
        return lambda: consumer.ack(packet_id, connection)

    def _on_message(self, topic: str, payload: bytes, packet_id: int | None) -> None:
        if self.telemetry is not None and topic.endswith(TELEMETRY_SUFFIX):
            self._submit_telemetry(topic, payload, packet_id)
            return
        try:
            report = self.validate(topic, payload)
        except Exception:  # never let one message kill the consumer
            logger.exception("server event=mqtt_message_failed topic=%s", topic)
            report = "error"
        if isinstance(report, str):  # dropped for good: redelivery would not make it valid
            self._ack_later(packet_id)()
            self._count(report)
            return
        self.status_writer.submit(report, self._ack_later(packet_id))  # acknowledged after the commit

    def _submit_telemetry(self, topic: str, payload: bytes, packet_id: int | None) -> None:
        """Hand a telemetry message to the ingest writer, which acknowledges it after the commit."""
        assert self.telemetry is not None
        self._count("received")
        try:
            device_id, _kind = parse_topic(topic)
        except ProtocolError as exc:
            logger.warning("server event=mqtt_message_dropped reason=bad_topic topic=%r error=%s",
                           topic[:200], exc)
            self._ack_later(packet_id)()
            self._count("malformed")
            return
        self.telemetry.submit(device_id, payload, self._ack_later(packet_id))

    # -- message handling --------------------------------------------------------

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def handle_message(self, topic: str, payload: bytes) -> str:
        """Validate and record one device message now, in a transaction of its own; return what
        happened (the stats key)."""
        report = self.validate(topic, payload)
        return report if isinstance(report, str) else self.status_writer.record_one(report)

    def validate(self, topic: str, payload: bytes) -> StatusMessage | PresenceMessage | str:
        """The status or presence report ``payload`` carries, or why it is dropped (the stats key)."""
        self._count("received")
        try:
            device_id, kind = parse_topic(topic)
        except ProtocolError as exc:
            logger.warning("server event=mqtt_message_dropped reason=bad_topic topic=%r error=%s", topic[:200], exc)
            return "malformed"
        if kind is TopicKind.TELEMETRY:
            logger.debug("server event=telemetry_ignored device=%s bytes=%d", device_id, len(payload))
            return "telemetry_ignored"
        if kind not in (TopicKind.STATUS, TopicKind.PRESENCE):
            logger.warning("server event=mqtt_message_dropped reason=unexpected_kind device=%s kind=%s",
                           device_id, kind)
            return "malformed"
        decoder = StatusMessage if kind is TopicKind.STATUS else PresenceMessage
        try:
            message = decoder.decode(payload)
        except ProtocolError as exc:
            logger.warning("server event=mqtt_message_dropped reason=malformed device=%s kind=%s error=%s",
                           device_id, kind, exc)
            return "malformed"
        if message.device_id != device_id:
            logger.warning("server event=mqtt_message_dropped reason=device_mismatch topic_device=%s "
                           "message_device=%s kind=%s", device_id, message.device_id, kind)
            return "device_mismatch"
        return message
