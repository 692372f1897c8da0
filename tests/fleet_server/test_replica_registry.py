"""Replica heartbeats and the reaping of dead replicas' MQTT sessions (the drain is faked
here; tests/integration/test_replicas.py drains a real one), on SQLite and PostgreSQL."""

from datetime import timedelta
from types import SimpleNamespace

from sqlalchemy import Engine
from sqlmodel import Session, select

from fleet_server.core.types import utcnow
from fleet_server.models.replica import ServerReplica
from fleet_server.mqtt.replica_registry import ReplicaRegistry, stale

STALE_S = 30.0


def registry(engine: Engine, server_id: str, drained: list[str], reachable: bool = True) -> ReplicaRegistry:
    def drain(_bridge: object, client_id: str) -> int | None:
        drained.append(client_id)
        return 3 if reachable else None

    bridge = SimpleNamespace(client_id=f"edgefleet-server-{server_id}")
    return ReplicaRegistry(engine, bridge, server_id, heartbeat_s=1.0, stale_after_s=STALE_S,  # type: ignore[arg-type]
                           drain=drain)


def rows(engine: Engine) -> dict[str, ServerReplica]:
    with Session(engine) as session:
        return {row.server_id: row for row in session.exec(select(ServerReplica)).all()}


def test_stale_is_the_other_replicas_silent_too_long() -> None:
    now = utcnow()
    replicas = [ServerReplica(server_id=name, mqtt_client_id=name, heartbeat_at=now - timedelta(seconds=age))
                for name, age in (("me", 100), ("fresh", 29), ("old", 31), ("older", 300))]
    assert [r.server_id for r in stale(replicas, "me", now, STALE_S)] == ["old", "older"]


def test_a_silent_replica_is_drained_once_by_the_lease_holder(migrated_engine: Engine) -> None:
    drained_by_a: list[str] = []
    drained_by_b: list[str] = []
    a, b, c = (registry(migrated_engine, "a", drained_by_a), registry(migrated_engine, "b", drained_by_b),
               registry(migrated_engine, "c", []))
    now = utcnow()
    for replica in (a, b, c):
        replica.beat(now)
    assert set(rows(migrated_engine)) == {"a", "b", "c"}
    assert a.reap(now) == [] and drained_by_a == []  # nobody is stale yet; "a" now holds the reaper lease

    later = now + timedelta(seconds=STALE_S + 1)
    a.beat(later)
    b.beat(later)  # "c" died
    assert a.reap(later) == ["c"]  # "a" renews the reaper lease and drains "c"
    assert b.reap(later) == []  # "b" does not hold the lease
    assert drained_by_a == ["edgefleet-server-c"] and drained_by_b == []
    assert set(rows(migrated_engine)) == {"a", "b"}
    assert a.reap(later + timedelta(seconds=1)) == []  # drained once


def test_an_unreachable_broker_keeps_the_row_for_the_next_attempt(migrated_engine: Engine) -> None:
    drained: list[str] = []
    a, dead = registry(migrated_engine, "a", drained, reachable=False), registry(migrated_engine, "dead", [])
    now = utcnow()
    dead.beat(now)
    later = now + timedelta(seconds=STALE_S + 1)
    a.beat(later)
    assert a.reap(later) == [] and drained == ["edgefleet-server-dead"]
    assert "dead" in rows(migrated_engine)


def test_a_clean_stop_unregisters(migrated_engine: Engine) -> None:
    a = registry(migrated_engine, "a", [])
    a.beat(utcnow())
    a.stop()
    assert rows(migrated_engine) == {}
