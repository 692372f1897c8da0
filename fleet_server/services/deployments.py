"""Deployments: sign one directive per targeted device (fresh per-device
sequence number, in one transaction), and the deployment views.

Publishing happens after the commit (see ``fleet_server.mqtt.directive_publisher``):
a directive is stored before it can reach any device, and a publish that
fails is retried when the bridge reconnects.
"""

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session, col, func, select

from agent.protocol import Action, Directive, ReleaseRef, Role, TopicKind, canonical_bytes, device_topic
from agent.protocol.canonical import parse_json
from agent.protocol.messages import DirectiveMessage
from fleet_server.core.db import begin_write
from fleet_server.core.types import utcnow, whole_seconds
from fleet_server.errors import DeploymentNotFoundError, DeviceNotFoundError, NoTargetsError
from fleet_server.keyring import Keyring
from fleet_server.models.deployment import (
    Deployment,
    DeploymentCreate,
    DeploymentEvent,
    DeploymentEventPublic,
    DeploymentPublic,
    DeploymentSummary,
    DeploymentTarget,
    DeploymentTargetPublic,
    ReleaseRefPublic,
)
from fleet_server.models.device import Device
from fleet_server.models.pki import DeviceRevocation
from fleet_server.models.release import ReleaseRecord
from fleet_server.services import devices, releases
from fleet_server.services.audit import SYSTEM_ACTOR, record_audit

logger = logging.getLogger(__name__)

MAX_DIRECTIVE_BYTES = 64 * 1024


@dataclass(frozen=True)
class OutgoingDirective:
    target_id: int
    device_id: str
    sequence: int
    topic: str
    payload: bytes


def create_deployment(
    session: Session, keyring: Keyring, request: DeploymentCreate, directive_ttl_s: int, actor: str = SYSTEM_ACTOR
) -> tuple[Deployment, list[OutgoingDirective]]:
    begin_write(session)
    release = releases.get_release(session, request.release.name, request.release.version)
    known = set(session.exec(select(Device.device_id).where(col(Device.device_id).in_(request.device_ids))).all())
    unknown = [device_id for device_id in request.device_ids if device_id not in known]
    if unknown:
        raise DeviceNotFoundError(f"unknown device ids: {unknown[:10]}")
    revoked = set(session.exec(select(DeviceRevocation.device_id)).all())
    target_ids = sorted((known | devices.device_ids_with_tags(session, request.tags)) - revoked)
    if not target_ids:
        raise NoTargetsError("the deployment selects no device: give device_ids or tags that match enrolled devices")

    signed = sign_directives(session, keyring, release, request.action, target_ids, directive_ttl_s)
    deployment = signed.deployment
    record_audit(session, actor, "deployment.created", {
        "deployment_id": deployment.id, "release": release.name, "version": release.version,
        "action": request.action.value, "devices": len(target_ids)})
    session.commit()
    logger.info("server event=deployment_created deployment=%d release=%s version=%d action=%s devices=%d",
                deployment.id, release.name, release.version, request.action.value, len(target_ids))
    return deployment, signed.outgoing()


@dataclass(frozen=True)
class SignedDirectives:
    deployment: Deployment
    targets: list[tuple[DeploymentTarget, dict]]  # each stored target with its signed directive envelope
    release_envelope: dict

    def outgoing(self) -> list[OutgoingDirective]:
        """The MQTT messages, to publish after the commit."""
        return [_outgoing(target, envelope, self.release_envelope) for target, envelope in self.targets]


def sign_directives(session: Session, keyring: Keyring, release: ReleaseRecord, action: Action,
                    device_ids: list[str], directive_ttl_s: float) -> SignedDirectives:
    """One deployment and, per device, a directive with its next sequence number, signed with the
    rollout key and stored; inside the caller's write transaction (flushed, not committed)."""
    deployment = Deployment(release_id=release.id, action=action.value)
    session.add(deployment)
    session.flush()
    assert deployment.id is not None
    issued = whole_seconds(utcnow())
    expires = issued + timedelta(seconds=directive_ttl_s)
    reference = ReleaseRef(release.name, release.version, release.sha256)
    pending: list[tuple[DeploymentTarget, dict]] = []
    for device_id in sorted(device_ids):  # sorted: a stable lock order across concurrent deployments
        device = session.exec(select(Device).where(Device.device_id == device_id).with_for_update()).one()
        device.directive_sequence += 1
        session.add(device)
        directive = Directive(device_id, device.directive_sequence, action, reference, issued, expires)
        envelope = keyring.sign(Role.ROLLOUT, directive.to_dict()).to_dict()
        target = DeploymentTarget(
            deployment_id=deployment.id,
            device_id=device_id,
            sequence=device.directive_sequence,
            directive=canonical_bytes(envelope).decode("utf-8"),
            directive_expires_at=expires,
        )
        session.add(target)
        pending.append((target, envelope))
    session.flush()
    return SignedDirectives(deployment, pending, releases.envelope_dict(release))


def _outgoing(target: DeploymentTarget, directive: dict, release_envelope: dict) -> OutgoingDirective:
    assert target.id is not None
    payload = DirectiveMessage(directive, release_envelope).encode()
    return OutgoingDirective(target.id, target.device_id, target.sequence,
                             device_topic(target.device_id, TopicKind.DIRECTIVE), payload)


def current_directives(session: Session, unpublished_only: bool = True) -> list[OutgoingDirective]:
    """Each device's newest unexpired directive (only those the broker never acknowledged, by default)."""
    conditions = [
        DeploymentTarget.sequence == Device.directive_sequence,
        DeploymentTarget.directive_expires_at > utcnow(),
    ]
    if unpublished_only:
        conditions.append(col(DeploymentTarget.published_at).is_(None))
    statement = (
        select(DeploymentTarget, ReleaseRecord)
        .join(Device, col(Device.device_id) == DeploymentTarget.device_id)
        .join(Deployment, col(Deployment.id) == DeploymentTarget.deployment_id)
        .join(ReleaseRecord, col(ReleaseRecord.id) == Deployment.release_id)
        .where(*conditions)
        .order_by(DeploymentTarget.id)  # type: ignore[arg-type]
    )
    return [
        _outgoing(target, parse_json(target.directive, MAX_DIRECTIVE_BYTES), releases.envelope_dict(release))
        for target, release in session.exec(statement).all()
    ]


def mark_published(session: Session, target_ids: list[int]) -> None:
    if not target_ids:
        return
    begin_write(session)
    now = utcnow()
    for target in session.exec(select(DeploymentTarget).where(col(DeploymentTarget.id).in_(target_ids))).all():
        if target.published_at is None:
            target.published_at = now
            session.add(target)
    session.commit()


def get_deployment(session: Session, deployment_id: int) -> Deployment:
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        raise DeploymentNotFoundError(f"deployment {deployment_id} not found")
    return deployment


def _release_ref(session: Session, deployment: Deployment) -> ReleaseRefPublic:
    release = session.get(ReleaseRecord, deployment.release_id)
    assert release is not None
    return ReleaseRefPublic(name=release.name, version=release.version, sha256=release.sha256)


def deployment_public(session: Session, deployment_id: int) -> DeploymentPublic:
    deployment = get_deployment(session, deployment_id)
    targets = session.exec(
        select(DeploymentTarget).where(DeploymentTarget.deployment_id == deployment_id).order_by(
            DeploymentTarget.device_id  # type: ignore[arg-type]
        )
    ).all()
    events: dict[int, list[DeploymentEventPublic]] = {}
    if targets:
        rows = session.exec(
            select(DeploymentEvent)
            .where(col(DeploymentEvent.target_id).in_([target.id for target in targets]))
            .order_by(DeploymentEvent.reported_at, DeploymentEvent.id)  # type: ignore[arg-type]
        ).all()
        for event in rows:
            events.setdefault(event.target_id, []).append(DeploymentEventPublic(
                state=event.state, reason=event.reason, variant=event.variant,
                reported_at=event.reported_at, recorded_at=event.recorded_at,
            ))
    target_views = [
        DeploymentTargetPublic(
            device_id=target.device_id, sequence=target.sequence, state=target.state, reason=target.reason,
            updated_at=target.updated_at, published_at=target.published_at,
            directive_expires_at=target.directive_expires_at, history=events.get(target.id or 0, []),
        )
        for target in targets
    ]
    assert deployment.id is not None
    return DeploymentPublic(
        id=deployment.id, release=_release_ref(session, deployment), action=deployment.action,
        created_at=deployment.created_at, states=dict(Counter(target.state for target in targets)),
        targets=target_views,
    )


def list_deployments(session: Session, limit: int = 100, offset: int = 0) -> list[DeploymentSummary]:
    deployments = session.exec(
        select(Deployment).order_by(col(Deployment.id).desc()).offset(offset).limit(limit)
    ).all()
    ids = [deployment.id for deployment in deployments]
    counts: dict[int, dict[str, int]] = {}
    if ids:
        rows = session.exec(
            select(DeploymentTarget.deployment_id, DeploymentTarget.state, func.count())
            .where(col(DeploymentTarget.deployment_id).in_(ids))
            .group_by(DeploymentTarget.deployment_id, DeploymentTarget.state)
        ).all()
        for deployment_id, state, count in rows:
            counts.setdefault(deployment_id, {})[state] = count
    result = []
    for deployment in deployments:
        assert deployment.id is not None
        result.append(DeploymentSummary(
            id=deployment.id, release=_release_ref(session, deployment), action=deployment.action,
            created_at=deployment.created_at, states=counts.get(deployment.id, {}),
        ))
    return result
