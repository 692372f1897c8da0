"""Rows that status-ingest and rollout tests start from: one released model version, an install
deployment and a pending target (sequence 1) for each device; and a device's report on its latest
rollout, recorded as the MQTT bridge records it."""

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session, select

from agent.protocol.messages import StatusMessage
from fleet_server.core.types import utcnow
from fleet_server.models.deployment import Deployment, DeploymentTarget
from fleet_server.models.device import Device
from fleet_server.models.registry import ModelRecord, ModelVersion
from fleet_server.models.release import ReleaseRecord
from fleet_server.models.rollout import RolloutDevice
from fleet_server.services import ingest


def seed_install_deployment(engine: Engine, device_ids: Sequence[str]) -> None:
    with Session(engine) as session:
        model = ModelRecord(name="m")
        session.add(model)
        session.flush()
        version = ModelVersion(model_id=model.id, version=1, sha256="1" * 64, size_bytes=1, format="onnx",
                               runtime="onnxruntime", precision="fp32")
        session.add(version)
        session.flush()
        release = ReleaseRecord(model_version_id=version.id, name="m", version=1, envelope="{}", sha256="2" * 64,
                                expires_at=utcnow() + timedelta(days=1))
        session.add(release)
        session.flush()
        deployment = Deployment(release_id=release.id, action="install")
        session.add(deployment)
        session.flush()
        for number, device_id in enumerate(device_ids):
            session.add(Device(device_id=device_id, credential_hash=str(number) * 64, arch="x86_64", ram_mb=1024))
            session.flush()
            session.add(DeploymentTarget(deployment_id=deployment.id, device_id=device_id, sequence=1,
                                         directive="{}", directive_expires_at=utcnow() + timedelta(days=1)))
        session.commit()


def report_rollout_status(engine: Engine, device_id: str, state: str, timestamp: float,
                          reason: str | None = None) -> None:
    """``device_id`` reports ``state`` for the directive of its most recent rollout (``ingest.record_status``)."""
    with Session(engine) as session:
        row = session.exec(select(RolloutDevice).where(RolloutDevice.device_id == device_id)
                           .order_by(RolloutDevice.rollout_id.desc())).first()  # type: ignore[attr-defined]
        assert row is not None
        target = session.get(DeploymentTarget, row.target_id)
        assert target is not None
        outcome = ingest.record_status(session, StatusMessage(device_id, state, target.sequence, reason=reason,
                                                              timestamp=timestamp))
    assert outcome == "recorded"
