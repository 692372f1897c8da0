"""Drain the persistent MQTT session a dead replica left on the broker.

Replicas on an external broker keep persistent sessions (what devices report while a
server restarts is queued for it) and consume through a shared subscription. Mosquitto
keeps assigning a disconnected member its share of the group's messages and queues
them in that member's session, so when a replica dies for good (killed host, a pod
replaced under a new id) its share of the device reports would wait forever.

A live replica drains that session: it connects with the dead replica's client id (a
persistent session, so the broker delivers what it queued and resends what was in
flight), handles every message exactly as its own bridge does (the same idempotent
ingest and telemetry writer, each message acknowledged after its commit), and once
nothing arrives for a moment it leaves the share group (unsubscribe) and disconnects:
from then on the broker hands the group's messages to the live members only.
"""

import logging
import time

from fleet_server.mqtt.bridge import MqttBridge

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
QUIET_S = 1.0  # nothing received for this long: the queue is empty
MAX_DRAIN_S = 120.0


def drain_session(bridge: MqttBridge, client_id: str, quiet_s: float = QUIET_S, max_s: float = MAX_DRAIN_S
                  ) -> int | None:
    """Handle what the broker queued for ``client_id``'s session; the number of messages, or None
    when the broker could not be reached (the session is left for a later attempt)."""
    if client_id == bridge.client_id:
        raise ValueError("a replica cannot drain its own session")
    drain = MqttBridge(bridge.address, bridge.engine, shared_subscription=True, telemetry=bridge.telemetry,
                       client_id=client_id, persistent_session=True, owns_telemetry=False)
    started = time.monotonic()
    drain.start()
    try:
        if not drain.wait_connected(CONNECT_TIMEOUT_S):
            logger.warning("server event=session_drain_unreachable client_id=%s", client_id)
            return None
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() - started < max_s:
            received = drain.stats["received"]
            if received != seen:
                seen, quiet_since = received, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                break
            time.sleep(0.05)
        return drain.stats["received"]
    finally:
        drain.stop()  # unsubscribes first (leaves the share group), then disconnects
        logger.info("server event=session_drained client_id=%s messages=%d seconds=%.1f", client_id,
                    drain.stats["received"], time.monotonic() - started)
