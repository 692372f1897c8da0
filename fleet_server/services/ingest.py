"""Record what devices report over MQTT: deployment state changes (``status``)
and presence/heartbeats with inventory (``presence``).

Idempotent, so at-least-once delivery is safe: a redelivered status is
recognised by (target, state, device timestamp); presence is last-writer-wins
by the device's clock, except that going offline (the last will, whose
timestamp is the connect time) always applies.

``apply_status``/``apply_presence`` change the session without committing (and
change nothing unless the outcome is RECORDED or NO_DEPLOYMENT), so the MQTT
status writer can store a batch of reports in one transaction
(``fleet_server.services.ingest_batch``); ``record_status``/``record_presence``
store one report in a transaction of its own.
"""

import enum
import logging
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class Applied:
    """What a report did, and the log line to write once it is committed."""

    outcome: IngestOutcome
    log: tuple[Any, ...] = ()  # format string and arguments

    def write_log(self) -> None:
        if self.log:
            logger.info(*self.log)


def usable_device(session: Session, device_id: str) -> Device | None:
    """The device, or None when it is unknown or revoked."""
    device = session.get(Device, device_id)
    if device is None or session.get(DeviceRevocation, device_id) is not None:
        return None
    return device


def apply_status(session: Session, device: Device, message: StatusMessage) -> Applied:
    reported_at = from_unix(message.timestamp)
    target = session.exec(
        select(DeploymentTarget).where(
            DeploymentTarget.device_id == message.device_id, DeploymentTarget.sequence == message.sequence
        ).with_for_update()  # PostgreSQL: another replica's report for this target waits, then reads this one's
    ).first() if message.sequence > 0 else None
    if target is not None:
        duplicate = session.exec(
            select(DeploymentEvent.id).where(
                DeploymentEvent.target_id == target.id,
                DeploymentEvent.state == message.state,
                DeploymentEvent.reported_at == reported_at,
            )
        ).first()
        if duplicate is not None:
            return Applied(IngestOutcome.DUPLICATE)
    if device.deployment_state_at is None or reported_at >= device.deployment_state_at:
        device.deployment_state = message.state
        device.deployment_state_at = reported_at
        session.add(device)
    if target is None:
        return Applied(IngestOutcome.NO_DEPLOYMENT)
    assert target.id is not None  # a row read from the database
    session.add(DeploymentEvent(target_id=target.id, state=message.state, reason=message.reason,
                                variant=message.variant, reported_at=reported_at))
    if target.state_reported_at is None or reported_at >= target.state_reported_at:
        target.state = message.state
        target.reason = message.reason
        target.state_reported_at = reported_at
        target.updated_at = utcnow()
        session.add(target)
    return Applied(IngestOutcome.RECORDED, ("server event=device_state device=%s sequence=%d state=%s deployment=%d",
                                            message.device_id, message.sequence, message.state, target.deployment_id))


def apply_presence(session: Session, device: Device, message: PresenceMessage) -> Applied:
    if not message.online:
        was_online = device.online
        device.online = False
        session.add(device)
        return Applied(IngestOutcome.RECORDED,
                       ("server event=device_offline device=%s", message.device_id) if was_online else ())
    if device.presence_timestamp is not None and message.timestamp < device.presence_timestamp:
        return Applied(IngestOutcome.STALE)
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
    return Applied(IngestOutcome.RECORDED,
                   ("server event=device_online device=%s agent_version=%s models=%d", message.device_id,
                    device.agent_version, len(message.models)) if came_online else ())


def apply_report(session: Session, device: Device, message: StatusMessage | PresenceMessage) -> Applied:
    if isinstance(message, StatusMessage):
        return apply_status(session, device, message)
    return apply_presence(session, device, message)


def record_report(session: Session, message: StatusMessage | PresenceMessage) -> IngestOutcome:
    """Store one report in a write transaction of its own."""
    begin_write(session)
    device = usable_device(session, message.device_id)
    if device is None:
        session.rollback()
        return IngestOutcome.UNKNOWN_DEVICE
    applied = apply_report(session, device, message)
    if applied.outcome in (IngestOutcome.DUPLICATE, IngestOutcome.STALE):
        session.rollback()
        return applied.outcome
    try:
        session.commit()
    except IntegrityError:  # the same report recorded concurrently (another replica)
        session.rollback()
        return IngestOutcome.DUPLICATE
    applied.write_log()
    return applied.outcome


def record_status(session: Session, message: StatusMessage) -> IngestOutcome:
    return record_report(session, message)


def record_presence(session: Session, message: PresenceMessage) -> IngestOutcome:
    return record_report(session, message)
