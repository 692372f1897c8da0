"""Recording device reports: ordering, duplicates, unknown devices, presence rules."""

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from agent.protocol.messages import InstalledModel, PresenceMessage, StatusMessage
from fleet_server.models.deployment import DeploymentEvent, DeploymentTarget
from fleet_server.models.device import Device
from fleet_server.services.ingest import IngestOutcome, record_presence, record_status
from tests.fleet_server.deployment_rows import seed_install_deployment

T0 = 1_800_000_000.0


@pytest.fixture
def engine(migrated_engine: Engine) -> Iterator[Engine]:
    seed_install_deployment(migrated_engine, ("dev-1",))
    yield migrated_engine


def status(engine: Engine, state: str, timestamp: float, sequence: int = 1, device: str = "dev-1",
           reason: str | None = None) -> IngestOutcome:
    with Session(engine) as session:
        return record_status(session, StatusMessage(device, state, sequence, reason=reason, timestamp=timestamp))


def presence(engine: Engine, message: PresenceMessage) -> IngestOutcome:
    with Session(engine) as session:
        return record_presence(session, message)


def target(engine: Engine) -> DeploymentTarget:
    with Session(engine) as session:
        return session.exec(select(DeploymentTarget)).one()


def device(engine: Engine) -> Device:
    with Session(engine) as session:
        found = session.get(Device, "dev-1")
        assert found is not None
        return found


def test_every_change_is_a_row_and_the_newest_wins(engine: Engine) -> None:
    assert status(engine, "notified", T0) is IngestOutcome.RECORDED
    assert status(engine, "succeeded", T0 + 2) is IngestOutcome.RECORDED
    assert status(engine, "downloading", T0 + 1) is IngestOutcome.RECORDED  # arrives late
    assert target(engine).state == "succeeded"
    with Session(engine) as session:
        states = [e.state for e in session.exec(select(DeploymentEvent).order_by(DeploymentEvent.reported_at))]
    assert states == ["notified", "downloading", "succeeded"]
    assert device(engine).deployment_state == "succeeded"


def test_redelivery_is_a_duplicate(engine: Engine) -> None:
    assert status(engine, "failed", T0, reason="disk full") is IngestOutcome.RECORDED
    assert status(engine, "failed", T0, reason="disk full") is IngestOutcome.DUPLICATE
    with Session(engine) as session:
        assert len(session.exec(select(DeploymentEvent)).all()) == 1
    assert target(engine).reason == "disk full"


def test_unknown_device_and_unknown_sequence(engine: Engine) -> None:
    assert status(engine, "failed", T0, device="ghost") is IngestOutcome.UNKNOWN_DEVICE
    assert status(engine, "idle", T0, sequence=0) is IngestOutcome.NO_DEPLOYMENT
    assert status(engine, "failed", T0 + 1, sequence=7) is IngestOutcome.NO_DEPLOYMENT
    assert target(engine).state == "pending"
    assert device(engine).deployment_state == "failed"
    assert presence(engine, PresenceMessage("ghost", True)) is IngestOutcome.UNKNOWN_DEVICE


def test_presence_online_stale_and_offline(engine: Engine) -> None:
    model = InstalledModel("m", 1, "onnx-fp32", "1" * 64)
    online = PresenceMessage("dev-1", True, "0.2.0", 30.0, (model,), "succeeded", timestamp=T0 + 10)
    assert presence(engine, online) is IngestOutcome.RECORDED
    stored = device(engine)
    assert stored.online and stored.agent_version == "0.2.0" and stored.installed_models == [model.to_dict()]
    older = PresenceMessage("dev-1", True, "0.1.0", 5.0, (), "idle", timestamp=T0)
    assert presence(engine, older) is IngestOutcome.STALE
    assert device(engine).agent_version == "0.2.0"
    last_will = PresenceMessage("dev-1", False, timestamp=T0)  # the will carries the (older) connect time
    assert presence(engine, last_will) is IngestOutcome.RECORDED
    assert device(engine).online is False
    assert device(engine).last_seen is not None
