"""A device's deployment history: every directive it was sent, newest first,
with the release and the states it reported (what the device page shows)."""

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select

from fleet_server.models.deployment import Deployment, DeploymentEvent, DeploymentEventPublic, DeploymentTarget
from fleet_server.models.release import ReleaseRecord


@dataclass(frozen=True)
class DeviceDeployment:
    deployment_id: int
    sequence: int
    action: str
    release_name: str
    release_version: int
    state: str
    reason: str | None
    created_at: datetime
    updated_at: datetime
    events: list[DeploymentEventPublic] = field(default_factory=list)


def deployment_history(session: Session, device_id: str, limit: int = 50) -> list[DeviceDeployment]:
    rows = session.exec(
        select(DeploymentTarget, Deployment, ReleaseRecord)
        .join(Deployment, col(Deployment.id) == DeploymentTarget.deployment_id)
        .join(ReleaseRecord, col(ReleaseRecord.id) == Deployment.release_id)
        .where(DeploymentTarget.device_id == device_id)
        .order_by(col(DeploymentTarget.sequence).desc())
        .limit(limit)
    ).all()
    events: dict[int, list[DeploymentEventPublic]] = {}
    target_ids = [target.id for target, _, _ in rows]
    if target_ids:
        for event in session.exec(
            select(DeploymentEvent).where(col(DeploymentEvent.target_id).in_(target_ids))
            .order_by(col(DeploymentEvent.reported_at), col(DeploymentEvent.id))
        ).all():
            events.setdefault(event.target_id, []).append(DeploymentEventPublic(
                state=event.state, reason=event.reason, variant=event.variant, reported_at=event.reported_at,
                recorded_at=event.recorded_at))
    history = []
    for target, deployment, release in rows:
        assert deployment.id is not None and target.id is not None
        history.append(DeviceDeployment(
            deployment.id, target.sequence, deployment.action, release.name, release.version, target.state,
            target.reason, deployment.created_at, target.updated_at, events.get(target.id, [])))
    return history
