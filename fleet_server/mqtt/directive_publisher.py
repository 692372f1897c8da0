"""Publish signed directives (retained, QoS 1) and remember which the broker acknowledged.

Directives are stored before publishing. A publish that cannot be sent (the
bridge is offline) or is not acknowledged within the timeout stays
unpublished in the database and is sent again after the next (re)connect,
as long as it is still the device's newest directive and has not expired.

The embedded broker keeps retained messages in memory only, so after a
server restart the publisher restores every device's newest unexpired
directive once (agents ignore a sequence they already saw).
"""

import logging
import threading
import time

import paho.mqtt.client as mqtt
from sqlalchemy import Engine
from sqlmodel import Session

from fleet_server.mqtt.bridge import MqttBridge
from fleet_server.services import deployments
from fleet_server.services.deployments import OutgoingDirective

logger = logging.getLogger(__name__)


class DirectivePublisher:
    def __init__(self, bridge: MqttBridge, engine: Engine, timeout_s: float, restore_retained: bool = False) -> None:
        self.bridge = bridge
        self.engine = engine
        self.timeout_s = timeout_s
        self._restore_retained = restore_retained
        self._in_flight: set[int] = set()
        self._lock = threading.Lock()
        bridge.add_connect_hook(self.publish_pending)

    def publish(self, directives: list[OutgoingDirective]) -> list[int]:
        """Publish and wait for the broker's acknowledgements; return the acknowledged target ids."""
        if not directives:
            return []
        if not self.bridge.connected:
            logger.warning("server event=directive_publish_deferred reason=mqtt_disconnected count=%d",
                           len(directives))
            return []
        with self._lock:
            directives = [d for d in directives if d.target_id not in self._in_flight]
            self._in_flight.update(d.target_id for d in directives)
        try:
            sent = [(directive, self.bridge.publish(directive.topic, directive.payload)) for directive in directives]
            acknowledged = self._wait(sent)
        finally:
            with self._lock:
                self._in_flight.difference_update(d.target_id for d in directives)
        with Session(self.engine, expire_on_commit=False) as session:
            deployments.mark_published(session, acknowledged)
        return acknowledged

    def _wait(self, sent: list[tuple[OutgoingDirective, mqtt.MQTTMessageInfo]]) -> list[int]:
        deadline = time.monotonic() + self.timeout_s
        acknowledged = []
        for directive, info in sent:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                logger.warning("server event=directive_publish_failed device=%s sequence=%d error=%s",
                               directive.device_id, directive.sequence, exc)
                continue
            if info.is_published():
                acknowledged.append(directive.target_id)
                logger.info("server event=directive_published device=%s sequence=%d topic=%s bytes=%d",
                            directive.device_id, directive.sequence, directive.topic, len(directive.payload))
            else:
                logger.warning("server event=directive_publish_timeout device=%s sequence=%d timeout_s=%.1f",
                               directive.device_id, directive.sequence, self.timeout_s)
        return acknowledged

    def publish_pending(self) -> None:
        """Send every stored directive the broker has not acknowledged yet (runs after each connect)."""
        restore = self._restore_retained
        with Session(self.engine, expire_on_commit=False) as session:
            pending = deployments.current_directives(session, unpublished_only=not restore)
        if pending:
            logger.info("server event=directive_republish count=%d restore_retained=%s", len(pending), restore)
            acknowledged = self.publish(pending)
            if len(acknowledged) < len(pending):
                return  # keep restoring on the next connect
        self._restore_retained = False
