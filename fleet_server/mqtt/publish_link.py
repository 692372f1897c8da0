"""The server's second MQTT connection, used only to publish directives.

The bridge's consuming connection handles each device message in its network
thread (validated and committed before it is acknowledged). The broker sends
the PUBACKs of the server's own publishes on that same ordered stream, so on
one connection a rollout's acknowledgements would queue behind every status
and presence message the rollout itself provokes. On a connection of their
own, directives are written in one go (up to ``PUBLISH_WINDOW`` QoS 1
messages in flight) and acknowledged as fast as the broker answers.

Same broker address and credentials as the bridge, a clean session and the
bridge's client id with ``-pub`` appended (the ACL is per username).
"""

import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from fleet_server.mqtt.broker_url import BrokerAddress

logger = logging.getLogger(__name__)

KEEPALIVE_S = 30
RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 30
PUBLISH_WINDOW = 10_000  # QoS 1 publishes in flight at once (paho's default is 20)


def make_client(address: BrokerAddress, client_id: str, clean_session: bool = True,
                manual_ack: bool = False) -> mqtt.Client:
    """A paho client for the broker at ``address`` with its credentials and TLS settings."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
                         protocol=mqtt.MQTTv311, manual_ack=manual_ack)
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set_context(address.tls_context())
    client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)
    client.max_inflight_messages_set(PUBLISH_WINDOW)
    return client


class PublishLink:
    def __init__(self, address: BrokerAddress, client_id: str, on_connected: Callable[[], None]) -> None:
        self.address = address
        self.client_id = client_id
        self._on_connected = on_connected
        self._connected = threading.Event()
        self.client = make_client(address, client_id)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self.client.connect_async(self.address.host, self.address.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()

    def stop(self) -> None:
        self._connected.clear()
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, retain: bool = True) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def _on_connect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                    _properties: Any) -> None:
        if reason_code.is_failure:
            logger.error("server event=mqtt_publish_link_refused url=%s reason=%s", self.address.url, reason_code)
            return
        self._connected.set()
        logger.info("server event=mqtt_publish_link_connected url=%s client_id=%s", self.address.url,
                    self.client_id)
        self._on_connected()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                       _properties: Any) -> None:
        if self._connected.is_set():
            logger.warning("server event=mqtt_publish_link_disconnected url=%s reason=%s", self.address.url,
                           reason_code)
        self._connected.clear()
