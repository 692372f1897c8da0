"""Deployments: sign one directive per targeted device (fresh per-device
sequence number, in one transaction), and the deployment views.

Publishing happens after the commit (see ``fleet_server.mqtt.directive_publisher``):
a directive is stored before it can reach any device, and a publish that
fails is retried when the bridge reconnects.
"""

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, update
from sqlmodel import Session, col, func, select

from agent.protocol import Action, Directive, ReleaseRef, Role, TopicKind, canonical_bytes, device_topic
from agent.protocol.canonical import parse_json
from agent.protocol.messages import DirectiveMessage
from fleet_server.core.db import begin_write
from fleet_server.core.types import utcnow, whole_seconds
from fleet_server.errors import DeploymentNotFoundError, DeviceNotFoundError, NoTargetsError
from fleet_server.keyring import Keyring
from fleet_server.models.deployment import (
    PENDING_STATE,
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
LOCK_CHUNK = 500  # device rows locked per statement (well under SQLite's bound-parameter limit)


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
class SignedTarget:
    """A stored ``deployment_target`` row, as far as its signer needs it."""

    id: int
    device_id: str
    sequence: int
    directive: bytes  # the signed directive envelope, canonical JSON


@dataclass(frozen=True)
class SignedDirectives:
    deployment: Deployment
    targets: list[tuple[SignedTarget, dict]]  # each stored target with its signed directive envelope
    release_envelope: dict

    def outgoing(self) -> list[OutgoingDirective]:
        """The MQTT messages, to publish after the commit (the release envelope is encoded once)."""
        release = canonical_bytes(self.release_envelope)
        return [OutgoingDirective(target.id, target.device_id, target.sequence,
                                  device_topic(target.device_id, TopicKind.DIRECTIVE),
                                  DirectiveMessage.join(target.directive, release))
                for target, _envelope in self.targets]


def sign_directives(session: Session, keyring: Keyring, release: ReleaseRecord, action: Action,
                    device_ids: list[str], directive_ttl_s: float) -> SignedDirectives:
    """One deployment and, per device, a directive with its next sequence number, signed with the
    rollout key and stored; inside the caller's write transaction (flushed, not committed).

    Devices are locked a chunk at a time in id order (a stable lock order across concurrent
    deployments) and their sequences and the targets are written with a few batched statements,
    so the cost per device is its signature, not a round trip of its own."""
    assert release.id is not None  # a stored release
    deployment = Deployment(release_id=release.id, action=action.value)
    session.add(deployment)
    session.flush()
    assert deployment.id is not None
    issued = whole_seconds(utcnow())
    expires = issued + timedelta(seconds=directive_ttl_s)
    reference = ReleaseRef(release.name, release.version, release.sha256)
    now = utcnow()
    rows: list[dict] = []
    envelopes: list[dict] = []
    for device_id, sequence in _next_sequences(session, device_ids):
        directive = Directive(device_id, sequence, action, reference, issued, expires)
        envelope = keyring.sign(Role.ROLLOUT, directive.to_dict()).to_dict()
        rows.append({"deployment_id": deployment.id, "device_id": device_id, "sequence": sequence,
                     "directive": canonical_bytes(envelope).decode("utf-8"), "directive_expires_at": expires,
                     "state": PENDING_STATE, "updated_at": now})
        envelopes.append(envelope)
    pending = [(target, envelopes[index]) for index, target in enumerate(_insert_targets(session, rows))]
    return SignedDirectives(deployment, pending, releases.envelope_dict(release))


def _insert_targets(session: Session, rows: list[dict]) -> list[SignedTarget]:
    """Multi-row INSERT ... RETURNING, a chunk per statement (not one ORM object or statement per row);
    in ``rows`` order (ids matched by device id, unique within a deployment: RETURNING has no order)."""
    table = DeploymentTarget.__table__  # type: ignore[attr-defined]  # set by the mapping; SQLModel does not declare it
    ids: dict[str, int] = {}
    for offset in range(0, len(rows), LOCK_CHUNK):
        returned: Sequence[tuple[Any, ...]] = session.execute(  # sqlmodel's execute: rows of Any
            insert(table).returning(table.c.id, table.c.device_id), rows[offset:offset + LOCK_CHUNK]).all()
        ids.update((device_id, id) for id, device_id in returned)
    return [SignedTarget(ids[row["device_id"]], row["device_id"], row["sequence"], row["directive"].encode("utf-8"))
            for row in rows]


def _next_sequences(session: Session, device_ids: list[str]) -> list[tuple[str, int]]:
    """Lock the devices' rows in id order (``FOR UPDATE`` on PostgreSQL; SQLite's write transaction
    already excludes other writers), bump each one's directive sequence and return (id, new sequence)."""
    unique = sorted(set(device_ids))
    bumped: list[tuple[str, int]] = []
    for offset in range(0, len(unique), LOCK_CHUNK):
        chunk = unique[offset:offset + LOCK_CHUNK]
        current = session.exec(select(Device.device_id, Device.directive_sequence)
                               .where(col(Device.device_id).in_(chunk)).order_by(col(Device.device_id))
                               .with_for_update()).all()
        session.exec(update(Device).where(col(Device.device_id).in_(chunk))
                     .values(directive_sequence=Device.directive_sequence + 1)
                     .execution_options(synchronize_session="fetch"))
        bumped.extend((device_id, sequence + 1) for device_id, sequence in current)
    if len(bumped) != len(unique):
        missing = sorted(set(unique) - {device_id for device_id, _ in bumped})
        raise DeviceNotFoundError(f"unknown device ids: {missing[:10]}")
    return bumped


def _outgoing(target: DeploymentTarget, directive: dict, release_envelope: dict) -> OutgoingDirective:
    assert target.id is not None
    payload = DirectiveMessage(directive, release_envelope).encode()
    return OutgoingDirective(target.id, target.device_id, target.sequence,
                             device_topic(target.device_id, TopicKind.DIRECTIVE), payload)


def current_directives(session: Session, unpublished_only: bool = True) -> list[OutgoingDirective]:
    """Each device's newest unexpired directive (only those the broker never acknowledged, by default)."""
    conditions = [
        col(DeploymentTarget.sequence) == Device.directive_sequence,
        col(DeploymentTarget.directive_expires_at) > utcnow(),
    ]
    if unpublished_only:
        conditions.append(col(DeploymentTarget.published_at).is_(None))
    statement = (
        select(DeploymentTarget, ReleaseRecord)
        .join(Device, col(Device.device_id) == DeploymentTarget.device_id)
        .join(Deployment, col(Deployment.id) == DeploymentTarget.deployment_id)
        .join(ReleaseRecord, col(ReleaseRecord.id) == Deployment.release_id)
        .where(*conditions)
        .order_by(col(DeploymentTarget.id))
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
    for offset in range(0, len(target_ids), LOCK_CHUNK):
        session.exec(update(DeploymentTarget)
                     .where(col(DeploymentTarget.id).in_(target_ids[offset:offset + LOCK_CHUNK]),
                            col(DeploymentTarget.published_at).is_(None))
                     .values(published_at=now).execution_options(synchronize_session=False))
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
            col(DeploymentTarget.device_id)
        )
    ).all()
    events: dict[int, list[DeploymentEventPublic]] = {}
    if targets:
        rows = session.exec(
            select(DeploymentEvent)
            .where(col(DeploymentEvent.target_id).in_([target.id for target in targets]))
            .order_by(col(DeploymentEvent.reported_at), col(DeploymentEvent.id))
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
            .group_by(col(DeploymentTarget.deployment_id), col(DeploymentTarget.state))
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
