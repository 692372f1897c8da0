"""Telemetry ingest through a real Mosquitto: stored in batches, deduplicated, malformed input
counted and dropped while ingestion keeps running; health_by_device reads what was stored."""

import time
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, select

from agent.protocol import TopicKind, device_topic
from agent.protocol.canonical import canonical_bytes
from agent.protocol.telemetry import MAX_TELEMETRY_MESSAGE_BYTES
from fleet_server.core.types import from_unix
from fleet_server.models.telemetry import ReferenceProfileRecord, TelemetryWindowRecord
from fleet_server.services.telemetry_query import health_by_device
from tests.fleet_server.conftest import Api
from tests.fleet_server.mqtt_client import TestMqttClient, wait_for
from tests.fleet_server.telemetry_helpers import make_profile, make_window


@pytest.fixture
def broker_api(api_factory: Callable[..., Api], mosquitto: Any) -> Api:
    api = api_factory(mqtt_url=mosquitto.url)
    assert api.runtime.bridge.wait_connected(10)
    return api


@pytest.fixture
def publisher(mosquitto: Any) -> Iterator[TestMqttClient]:
    client = TestMqttClient(mosquitto.host, mosquitto.port, f"tele-test-{time.monotonic_ns()}")
    yield client
    client.close()


def stats(api: Api) -> Any:
    return api.runtime.bridge.telemetry.stats


def stored(api: Api, device_id: str) -> list[TelemetryWindowRecord]:
    with Session(api.runtime.engine) as session:
        return list(session.exec(select(TelemetryWindowRecord).where(TelemetryWindowRecord.device_id == device_id)
                                 .order_by(TelemetryWindowRecord.seq)))


def test_windows_are_stored_once_with_their_profile(broker_api: Api, publisher: TestMqttClient,
                                                    database_backend: str) -> None:
    device_id = f"tele-a-{database_backend}"
    assert broker_api.enroll(device_id).status_code == 201
    profile = make_profile()
    sha = broker_api.runtime.artifacts.path_for(profile.sha256())
    sha.parent.mkdir(parents=True, exist_ok=True)
    sha.write_bytes(profile.to_bytes())  # the release's profile artifact, as the pipeline stores it
    start = time.time() - 30
    windows = [make_window(device_id, seq, start + seq, profile, errors=seq % 2) for seq in range(1, 6)]
    topic = device_topic(device_id, TopicKind.TELEMETRY)
    for window in windows + windows[:2]:  # two redeliveries
        publisher.publish(topic, window.encode())
    wait_for(lambda: stats(broker_api)["telemetry_stored"] + stats(broker_api)["telemetry_duplicate"] >= 7, 20,
             "7 windows ingested")
    rows = stored(broker_api, device_id)
    assert [row.seq for row in rows] == [1, 2, 3, 4, 5]
    assert stats(broker_api)["telemetry_stored"] == 5 and stats(broker_api)["telemetry_duplicate"] == 2
    first = rows[0]
    assert (first.requests, first.errors, first.model_name, first.model_version) == (300, 1, "tele-model", 1)
    assert first.window_start == from_unix(round(start + 1, 3))
    assert first.latency_p95_ms is not None and 0.5 < first.latency_p95_ms < 2.0
    assert first.profile_sha256 == profile.sha256() and len(first.feature_counts or []) == 8
    with Session(broker_api.runtime.engine) as session:
        assert session.get(ReferenceProfileRecord, profile.sha256()) is not None
        health = health_by_device(session, [device_id, "nobody"], from_unix(start), from_unix(start + 100))
    assert health[device_id].requests == 1500 and health[device_id].errors == 3
    assert health[device_id].drift_score is not None and health[device_id].drift_score < 0.05
    assert health["nobody"].requests == 0 and health["nobody"].p95_latency_ms is None


def test_malformed_telemetry_is_counted_and_dropped_and_ingestion_goes_on(broker_api: Api,
                                                                        publisher: TestMqttClient,
                                                                        database_backend: str) -> None:
    device_id = f"tele-b-{database_backend}"
    assert broker_api.enroll(device_id).status_code == 201
    topic = device_topic(device_id, TopicKind.TELEMETRY)
    good = make_window(device_id, 1, time.time())
    wrong_types = good.to_dict() | {"requests": "many"}
    publisher.publish(topic, b"{not json")  # not zlib at all
    publisher.publish(topic, zlib.compress(b'{"type": "telemetry", "v": 1'))  # bad JSON
    publisher.publish(topic, zlib.compress(canonical_bytes(wrong_types)))
    publisher.publish(topic, b"\x78\x9c" + b"\x00" * (MAX_TELEMETRY_MESSAGE_BYTES + 10))  # huge
    publisher.publish(device_topic("tele-nobody", TopicKind.TELEMETRY),
                      make_window("tele-nobody", 1, time.time()).encode())  # unknown device
    publisher.publish(topic, make_window("someone-else", 1, time.time()).encode())  # wrong device in the body
    publisher.publish(topic, good.encode())
    wait_for(lambda: stats(broker_api)["telemetry_stored"] >= 1, 20, "the good window stored")
    counts = stats(broker_api)
    assert counts["telemetry_malformed"] == 3
    assert counts["telemetry_oversized"] == 1
    assert counts["telemetry_unknown_device"] == 1
    assert counts["telemetry_device_mismatch"] == 1
    assert [row.seq for row in stored(broker_api, device_id)] == [1]
    with Session(broker_api.runtime.engine) as session:
        assert health_by_device(session, [device_id], from_unix(good.start - 1),
                                from_unix(good.start) + timedelta(seconds=5))[device_id].requests == 300
