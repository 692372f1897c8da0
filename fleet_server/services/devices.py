"""Device enrollment, credential checks and the device views."""

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlmodel import Session, col, delete, select

from fleet_server.core.db import begin_write
from fleet_server.core.security import hash_token, new_token
from fleet_server.core.types import utcnow
from fleet_server.errors import CertificateRequestError, DeviceNotFoundError, DeviceRevokedError
from fleet_server.models.deployment import Deployment, DeploymentTarget
from fleet_server.models.device import (
    Device,
    DeviceEnroll,
    DevicePublic,
    DeviceTag,
    InstalledModelPublic,
    LatestDeploymentPublic,
)
from fleet_server.models.pki import CertificatePublic, DeviceRevocation
from fleet_server.models.release import ReleaseRecord
from fleet_server.pki import FleetCA
from fleet_server.services import bootstrap_tokens, certificates
from fleet_server.services.audit import record_audit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Enrollment:
    device: Device
    credential: str  # plaintext, returned to the device once
    created: bool
    certificate: CertificatePublic | None = None  # issued from the request's CSR


def enroll_device(session: Session, request: DeviceEnroll, provisioning_token: str = "", ca: FleetCA | None = None,
                  certificate_lifetime: timedelta = timedelta(days=7)) -> Enrollment:
    """Create the device, or rotate the credential of an existing one (re-enrollment).

    The bootstrap token is spent in the same transaction (``bootstrap_tokens.consume``); a CSR in the
    request gets a client certificate from ``ca``. A revoked device cannot enroll again.
    """
    credential = new_token()
    begin_write(session)
    method = bootstrap_tokens.consume(session, request.bootstrap_token, request.device_id, provisioning_token)
    if session.get(DeviceRevocation, request.device_id) is not None:
        raise DeviceRevokedError(f"device {request.device_id!r} is revoked and cannot enroll again")
    device = session.get(Device, request.device_id)
    created = device is None
    now = utcnow()
    if device is None:
        device = Device(device_id=request.device_id, credential_hash=hash_token(credential), enrolled_at=now,
                        credential_rotated_at=now, arch=request.arch, ram_mb=request.ram_mb,
                        runtimes=list(request.runtimes), agent_version=request.agent_version)
        session.add(device)
    else:
        device.arch, device.ram_mb, device.agent_version = request.arch, request.ram_mb, request.agent_version
        device.runtimes = list(request.runtimes)
        device.credential_hash = hash_token(credential)
        device.credential_rotated_at = now
        session.add(device)
        session.flush()
        session.exec(delete(DeviceTag).where(col(DeviceTag.device_id) == request.device_id))
    session.flush()
    for tag in request.tags:
        session.add(DeviceTag(device_id=request.device_id, tag=tag))
    certificate = None
    if request.csr is not None:
        if ca is None:
            raise CertificateRequestError("this server has no fleet CA to certify the CSR")
        certificate = certificates.issue(session, ca, request.device_id, request.csr, certificate_lifetime)
    record_audit(session, method, "device.enrolled", {
        "device_id": request.device_id, "created": created, "tags": request.tags,
        "certificate_serial": certificate.serial if certificate else None})
    session.commit()
    logger.info("server event=device_enrolled device=%s created=%s arch=%s ram_mb=%d runtimes=%s tags=%s",
                device.device_id, created, device.arch, device.ram_mb, ",".join(device.runtimes),
                ",".join(request.tags))
    return Enrollment(device, credential, created, certificate)


def authenticate_device(session: Session, credential: str) -> Device | None:
    """The device holding ``credential``, or None."""
    if not credential:
        return None
    device = session.exec(select(Device).where(Device.credential_hash == hash_token(credential))).first()
    if device is not None and session.get(DeviceRevocation, device.device_id) is not None:
        logger.info("server event=auth_refused device=%s reason=revoked", device.device_id)
        return None
    return device


def get_device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise DeviceNotFoundError(f"device {device_id!r} not found")
    return device


def device_ids_with_tags(session: Session, tags: list[str]) -> set[str]:
    if not tags:
        return set()
    statement = select(DeviceTag.device_id).where(col(DeviceTag.tag).in_(tags))
    return set(session.exec(statement).all())


def list_devices(session: Session, tag: str | None = None) -> list[DevicePublic]:
    statement = select(Device).order_by(col(Device.device_id))
    if tag is not None:
        statement = statement.where(col(Device.device_id).in_(select(DeviceTag.device_id).where(DeviceTag.tag == tag)))
    devices = session.exec(statement).all()
    tags = _tags_by_device(session, [device.device_id for device in devices])
    return [_public(session, device, tags.get(device.device_id, []), with_latest=False) for device in devices]


def device_public(session: Session, device_id: str) -> DevicePublic:
    device = get_device(session, device_id)
    tags = _tags_by_device(session, [device_id]).get(device_id, [])
    return _public(session, device, tags, with_latest=True)


def _tags_by_device(session: Session, device_ids: list[str]) -> dict[str, list[str]]:
    if not device_ids:
        return {}
    rows = session.exec(select(DeviceTag).where(col(DeviceTag.device_id).in_(device_ids)).order_by(DeviceTag.tag))
    result: dict[str, list[str]] = {}
    for row in rows:
        result.setdefault(row.device_id, []).append(row.tag)
    return result


def _latest_deployment(session: Session, device_id: str) -> LatestDeploymentPublic | None:
    row = session.exec(
        select(DeploymentTarget, ReleaseRecord)
        .join(Deployment, col(Deployment.id) == DeploymentTarget.deployment_id)
        .join(ReleaseRecord, col(ReleaseRecord.id) == Deployment.release_id)
        .where(DeploymentTarget.device_id == device_id)
        .order_by(col(DeploymentTarget.sequence).desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    target, release = row
    return LatestDeploymentPublic(
        deployment_id=target.deployment_id, sequence=target.sequence, release_name=release.name,
        release_version=release.version, state=target.state, reason=target.reason, updated_at=target.updated_at,
    )


def _public(session: Session, device: Device, tags: list[str], with_latest: bool) -> DevicePublic:
    models = [InstalledModelPublic.model_validate(model) for model in _valid_models(device.installed_models)]
    return DevicePublic(
        device_id=device.device_id,
        arch=device.arch,
        ram_mb=device.ram_mb,
        runtimes=list(device.runtimes),
        agent_version=device.agent_version,
        tags=tags,
        enrolled_at=device.enrolled_at,
        online=device.online,
        last_seen=device.last_seen,
        uptime_s=device.uptime_s,
        current_model=models[0] if models else None,
        models=models,
        deployment_state=device.deployment_state,
        directive_sequence=device.directive_sequence,
        latest_deployment=_latest_deployment(session, device.device_id) if with_latest else None,
    )


def _valid_models(models: Any) -> list[dict[str, Any]]:
    return [model for model in models or [] if isinstance(model, dict)]


# Public names for the list queries in fleet_server/services/device_query.py.
tags_by_device = _tags_by_device
public_view = _public
