"""Server replicas announce themselves in the database, and a dead one's broker session
is drained by a live one.

Every replica on an external broker writes a heartbeat row (``server_replica``: its id
and the client id of its persistent MQTT session) every ``replica_heartbeat_s``. The
replica holding the ``mqtt-session-reaper`` lease (the same lease rows as the rollout
controller's, under another name, so exactly one replica reaps) looks for rows whose
heartbeat is older than ``replica_stale_s``, drains each one's session
(``session_drain``) and deletes the row. A replica that stops cleanly deletes its own
row (its bridge has already left the share group), so only crashed ones are drained;
one that comes back under the same id simply beats again.
"""

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from fleet_server.core.db import begin_write
from fleet_server.core.types import utcnow
from fleet_server.models.replica import ServerReplica
from fleet_server.mqtt.bridge import MqttBridge
from fleet_server.mqtt.session_drain import drain_session
from fleet_server.rollouts import lease

logger = logging.getLogger(__name__)

REAPER_LEASE = "mqtt-session-reaper"
Drain = Callable[[MqttBridge, str], int | None]


def stale(replicas: Iterable[ServerReplica], me: str, now: datetime, stale_after_s: float) -> list[ServerReplica]:
    """The other replicas whose last heartbeat is older than ``stale_after_s`` (pure)."""
    cutoff = now - timedelta(seconds=stale_after_s)
    return sorted((r for r in replicas if r.server_id != me and r.heartbeat_at < cutoff), key=lambda r: r.server_id)


class ReplicaRegistry:
    def __init__(self, engine: Engine, bridge: MqttBridge, server_id: str, heartbeat_s: float, stale_after_s: float,
                 drain: Drain = drain_session) -> None:
        self.engine = engine
        self.bridge = bridge
        self.server_id = server_id
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.drain = drain
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.beat(utcnow())
        self._thread = threading.Thread(target=self._loop, name="edgefleet-replica-registry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.heartbeat_s + 5)
        try:
            with Session(self.engine) as session:
                begin_write(session)
                row = session.get(ServerReplica, self.server_id)
                if row is not None:
                    session.delete(row)
                session.commit()
                lease.release(session, self.server_id, REAPER_LEASE)
        except OperationalError as exc:
            logger.warning("server event=replica_unregister_failed error=%s", exc.orig or exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                now = utcnow()
                self.beat(now)
                self.reap(now)
            except OperationalError as exc:
                logger.warning("server event=replica_heartbeat_failed error=%s", exc.orig or exc)
            except Exception:
                logger.exception("server event=replica_registry_crashed")

    def beat(self, now: datetime) -> None:
        with Session(self.engine) as session:
            begin_write(session)
            row = session.get(ServerReplica, self.server_id)
            if row is None:
                row = ServerReplica(server_id=self.server_id, mqtt_client_id=self.bridge.client_id, started_at=now)
                logger.info("server event=replica_registered server_id=%s client_id=%s", self.server_id,
                            self.bridge.client_id)
            row.mqtt_client_id, row.heartbeat_at = self.bridge.client_id, now
            session.add(row)
            session.commit()

    def reap(self, now: datetime) -> list[str]:
        """Drain the sessions of stale replicas if this replica holds the reaper lease; return their ids."""
        with Session(self.engine, expire_on_commit=False) as session:
            if not lease.acquire(session, self.server_id, self.stale_after_s, now, REAPER_LEASE):
                return []
            dead = stale(session.exec(select(ServerReplica)).all(), self.server_id, now, self.stale_after_s)
        reaped = []
        for replica in dead:
            if self._stop.is_set():
                break
            logger.warning("server event=replica_stale server_id=%s heartbeat_at=%s", replica.server_id,
                           replica.heartbeat_at.isoformat())
            if self.drain(self.bridge, replica.mqtt_client_id) is None:
                continue
            with Session(self.engine) as session:
                begin_write(session)
                row = session.get(ServerReplica, replica.server_id)
                if row is not None and row.heartbeat_at == replica.heartbeat_at:  # it did not come back meanwhile
                    session.delete(row)
                session.commit()
            reaped.append(replica.server_id)
        return reaped
