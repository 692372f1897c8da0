"""The device's MQTT connection (paho-mqtt 2, MQTT 3.1.1, QoS 1 everywhere).

Client id and username are the device id, the password its credential, and
the session is persistent (clean_session=False) so directives published while
the device was offline arrive when it reconnects. The last will is the
retained offline presence. paho's network thread reconnects with exponential
backoff; each link draws its own jittered minimum delay so a fleet that lost
its broker does not reconnect in lockstep. Incoming directives are handed to
``on_directive`` which must only enqueue (it runs on paho's thread). Given a
``SharedNetworkLoop`` (the simulator), the link runs on that loop's thread
instead of a thread of its own.
"""

import logging
import random
import ssl
import threading
import urllib.parse
from collections.abc import Callable

import paho.mqtt.client as mqtt

from agent.errors import ConfigError
from agent.mqtt_loop import SharedNetworkLoop
from agent.protocol.messages import PresenceMessage, StatusMessage
from agent.protocol.topics import TopicKind, device_topic

log = logging.getLogger(__name__)

QOS = 1
MAX_QUEUED_MESSAGES = 1000


def parse_mqtt_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:port`` -> (host, port, tls); ``mqtts://`` turns TLS on (default port 8883)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"MQTT URL {url!r} must look like mqtt://host:1883 or mqtts://host:8883")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError(f"MQTT URL {url!r} has an invalid port") from None
    return parts.hostname, port, tls


class MqttLink:
    def __init__(self, device_id: str, credential: str, mqtt_url: str, on_directive: Callable[[bytes], None],
                 offline_presence: Callable[[], PresenceMessage], keepalive_s: int = 30,
                 reconnect_max_s: int = 60, network: SharedNetworkLoop | None = None,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.device_id = device_id
        self._network = network
        self.host, self.port, tls = parse_mqtt_url(mqtt_url)
        self._on_directive = on_directive
        self._offline_presence = offline_presence
        self._on_connected: list[Callable[[], None]] = []
        self._keepalive_s = keepalive_s
        self.connected = threading.Event()
        self._directive_topic = device_topic(device_id, TopicKind.DIRECTIVE)
        self._status_topic = device_topic(device_id, TopicKind.STATUS)
        self._presence_topic = device_topic(device_id, TopicKind.PRESENCE)
        self._telemetry_topic = device_topic(device_id, TopicKind.TELEMETRY)
        self._on_published: list[Callable[[int], None]] = []
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=False,
                             protocol=mqtt.MQTTv311)
        # With a client certificate (mqtts:// and agent.identity) the certificate is the credential: the
        # broker maps its CN to the username, and the HTTP credential is not sent to the broker.
        client.username_pw_set(device_id, None if tls_context is not None else credential)
        client.will_set(self._presence_topic, offline_presence().encode(), qos=QOS, retain=True)
        client.reconnect_delay_set(min_delay=random.uniform(0.5, 1.5), max_delay=reconnect_max_s)  # type: ignore[arg-type]
        client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        if tls and tls_context is not None:
            client.tls_set_context(tls_context)
        elif tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        self._client = client

    def add_connect_listener(self, listener: Callable[[], None]) -> None:
        """Run ``listener`` (on paho's thread) after every successful (re)connect."""
        self._on_connected.append(listener)

    def start(self) -> None:
        log.info("event=mqtt_connecting device=%s host=%s port=%d", self.device_id, self.host, self.port)
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive_s)
        if self._network is not None:
            self._network.add(self._client)
        else:
            self._client.loop_start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish the offline presence (a clean disconnect suppresses the will), then disconnect."""
        if self.connected.is_set():
            info = self._client.publish(self._presence_topic, self._offline_presence().encode(), qos=QOS, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("event=offline_presence_not_sent error=%r", str(exc))
        self._client.disconnect()
        if self._network is not None:
            self._network.remove(self._client)
        else:
            self._client.loop_stop()
        self.connected.clear()
        log.info("event=mqtt_stopped device=%s", self.device_id)

    def publish_status(self, message: StatusMessage) -> None:
        self._publish(self._status_topic, message.encode(), retain=False)

    def publish_presence(self, message: PresenceMessage) -> mqtt.MQTTMessageInfo:
        """Publish (retained); the returned info tells when the broker acknowledged it."""
        return self._publish(self._presence_topic, message.encode(), retain=True)

    def publish_telemetry(self, payload: bytes) -> tuple[bool, int]:
        """Hand an encoded telemetry window to paho (QoS 1): (accepted, message id for the PUBACK)."""
        info = self._publish(self._telemetry_topic, payload, retain=False)
        return info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN), info.mid

    def add_publish_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(mid)`` (on paho's thread) when the broker acknowledged a QoS 1 publish."""
        self._on_published.append(listener)

    def _publish(self, topic: str, payload: bytes, retain: bool) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(topic, payload, qos=QOS, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: queued until reconnect
            log.warning("event=mqtt_publish_failed topic=%s rc=%s", topic, mqtt.error_string(info.rc))
        return info

    # -- paho callbacks (network thread) ---------------------------------------

    def _handle_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                        reason_code: mqtt.ReasonCode, properties: object) -> None:
        if reason_code.is_failure:
            log.error("event=mqtt_connect_refused device=%s reason=%r", self.device_id, str(reason_code))
            return
        self.connected.set()
        log.info("event=mqtt_connected device=%s session_present=%s", self.device_id, flags.session_present)
        client.subscribe(self._directive_topic, qos=QOS)
        for listener in self._on_connected:
            try:
                listener()
            except Exception:
                log.exception("event=connect_listener_failed")

    def _handle_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags,
                           reason_code: mqtt.ReasonCode, properties: object) -> None:
        if self.connected.is_set():
            log.warning("event=mqtt_disconnected device=%s reason=%r", self.device_id, str(reason_code))
        self.connected.clear()

    def _handle_publish(self, client: mqtt.Client, userdata: object, mid: int, reason_code: mqtt.ReasonCode,
                        properties: object) -> None:
        for listener in self._on_published:
            listener(mid)

    def _handle_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic != self._directive_topic:
            log.warning("event=mqtt_unexpected_topic topic=%s", message.topic)
            return
        self._on_directive(bytes(message.payload))
