"""Record what devices report over MQTT: deployment state changes (``status``)
and presence/heartbeats with inventory (``presence``).

Idempotent, so at-least-once delivery is safe: a redelivered status is
recognised by (target, state, device timestamp); presence is last-writer-wins
by the device's clock, except that going offline (the last will, whose
timestamp is the connect time) always applies.
"""

import enum
import logging

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from agent.protocol.messages import PresenceMessage, StatusMessage
from fleet_server.core.db import begin_write
from fleet_server.core.types import from_unix, utcnow
from fleet_server.models.deployment import DeploymentEvent, DeploymentTarget
from fleet_server.models.device import Device
from fleet_server.models.pki import DeviceRevocation

logger = logging.getLogger(__name__)


class IngestOutcome(enum.StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    STALE = "stale"
    UNKNOWN_DEVICE = "unknown_device"
    NO_DEPLOYMENT = "no_deployment"  # state recorded on the device only: no target has that sequence


def record_status(session: Session, message: StatusMessage) -> IngestOutcome:
    begin_write(session)
    device = session.get(Device, message.device_id)
    if device is None or session.get(DeviceRevocation, message.device_id) is not None:  # unknown or revoked
        session.rollback()
        return IngestOutcome.UNKNOWN_DEVICE
    reported_at = from_unix(message.timestamp)
    if device.deployment_state_at is None or reported_at >= device.deployment_state_at:
        device.deployment_state = message.state
        device.deployment_state_at = reported_at
        session.add(device)
    target = session.exec(
        select(DeploymentTarget).where(
            DeploymentTarget.device_id == message.device_id, DeploymentTarget.sequence == message.sequence
        )
    ).first() if message.sequence > 0 else None
    if target is None:
        session.commit()
        return IngestOutcome.NO_DEPLOYMENT
    assert target.id is not None
    duplicate = session.exec(
        select(DeploymentEvent.id).where(
            DeploymentEvent.target_id == target.id,
            DeploymentEvent.state == message.state,
            DeploymentEvent.reported_at == reported_at,
        )
    ).first()
    if duplicate is not None:
        session.rollback()
        return IngestOutcome.DUPLICATE
    session.add(DeploymentEvent(target_id=target.id, state=message.state, reason=message.reason,
                                variant=message.variant, reported_at=reported_at))
    if target.state_reported_at is None or reported_at >= target.state_reported_at:
        target.state = message.state
        target.reason = message.reason
        target.state_reported_at = reported_at
        target.updated_at = utcnow()
        session.add(target)
    try:
        session.commit()
    except IntegrityError:  # the same report recorded concurrently (another replica)
        session.rollback()
        return IngestOutcome.DUPLICATE
    logger.info("server event=device_state device=%s sequence=%d state=%s deployment=%d",
                message.device_id, message.sequence, message.state, target.deployment_id)
    return IngestOutcome.RECORDED


def record_presence(session: Session, message: PresenceMessage) -> IngestOutcome:
    begin_write(session)
    device = session.get(Device, message.device_id)
    if device is None or session.get(DeviceRevocation, message.device_id) is not None:  # unknown or revoked
        session.rollback()
        return IngestOutcome.UNKNOWN_DEVICE
    if not message.online:
        was_online = device.online
        device.online = False
        session.add(device)
        session.commit()
        if was_online:
            logger.info("server event=device_offline device=%s", message.device_id)
        return IngestOutcome.RECORDED
    if device.presence_timestamp is not None and message.timestamp < device.presence_timestamp:
        session.rollback()
        return IngestOutcome.STALE
    came_online = not device.online
    device.online = True
    device.last_seen = utcnow()
    device.presence_timestamp = message.timestamp
    device.uptime_s = message.uptime_s
    device.installed_models = [model.to_dict() for model in message.models]
    if message.agent_version:
        device.agent_version = message.agent_version[:64]
    reported_at = from_unix(message.timestamp)
    if message.deployment_state is not None and (
        device.deployment_state_at is None or reported_at >= device.deployment_state_at
    ):
        device.deployment_state = message.deployment_state
        device.deployment_state_at = reported_at
    session.add(device)
    session.commit()
    if came_online:
        logger.info("server event=device_online device=%s agent_version=%s models=%d",
                    message.device_id, device.agent_version, len(message.models))
    return IngestOutcome.RECORDED
