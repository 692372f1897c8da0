"""Device certificates and revocation.

Certificates are issued from the device's CSR at enrollment and renewed by the
device itself (authenticated by its credential) before they expire. Revoking a
device refuses its credential at once, revokes its certificates and rewrites
the CRL file the broker loads (Mosquitto reads ``crlfile`` at start and on
SIGHUP; see ``edgefleet broker-config``).
"""

import logging
from datetime import datetime, timedelta
from pathlib import Path

from sqlmodel import Session, col, select

from fleet_server.core.db import begin_write
from fleet_server.core.types import utcnow
from fleet_server.errors import DeviceNotFoundError, DeviceRevokedError
from fleet_server.models.device import Device
from fleet_server.models.pki import CertificatePublic, DeviceCertificate, DeviceRevocation, RevocationPublic
from fleet_server.pki import FleetCA, cert_pem, fingerprint, serial_hex
from fleet_server.services.audit import record_audit

logger = logging.getLogger(__name__)


def is_revoked(session: Session, device_id: str) -> bool:
    return session.get(DeviceRevocation, device_id) is not None


def issue(session: Session, ca: FleetCA, device_id: str, csr: str, lifetime: timedelta) -> CertificatePublic:
    """Certify the key of ``csr`` for ``device_id`` and record the certificate (the caller commits)."""
    certificate = ca.issue_device(csr, device_id, lifetime)
    serial = serial_hex(certificate.serial_number)
    session.add(DeviceCertificate(serial=serial, device_id=device_id, fingerprint_sha256=fingerprint(certificate),
                                  not_before=certificate.not_valid_before_utc,
                                  not_after=certificate.not_valid_after_utc))
    session.flush()
    logger.info("server event=certificate_issued device=%s serial=%s not_after=%s", device_id, serial,
                certificate.not_valid_after_utc.isoformat())
    return CertificatePublic(certificate=cert_pem(certificate).decode("ascii"),
                             ca_certificate=ca.certificate_pem.decode("ascii"), serial=serial,
                             not_after=certificate.not_valid_after_utc)


def renew(session: Session, ca: FleetCA, device_id: str, csr: str, lifetime: timedelta) -> CertificatePublic:
    begin_write(session)
    if is_revoked(session, device_id):
        raise DeviceRevokedError(f"device {device_id!r} is revoked")
    issued = issue(session, ca, device_id, csr, lifetime)
    record_audit(session, f"device:{device_id}", "device.certificate_renewed",
                 {"device_id": device_id, "serial": issued.serial, "not_after": issued.not_after})
    session.commit()
    return issued


def revoked_serials(session: Session) -> list[tuple[str, datetime]]:
    """(serial, revoked at) of every revoked certificate that has not expired yet."""
    rows = session.exec(
        select(DeviceCertificate.serial, DeviceCertificate.revoked_at)
        .where(col(DeviceCertificate.revoked_at).is_not(None), col(DeviceCertificate.not_after) > utcnow())
        .order_by(col(DeviceCertificate.serial))
    ).all()
    return [(serial, revoked_at) for serial, revoked_at in rows if revoked_at is not None]  # where() excludes None


def crl_pem(session: Session, ca: FleetCA) -> bytes:
    return ca.build_crl(revoked_serials(session))


def write_crl(session: Session, ca: FleetCA) -> Path:
    path = ca.write_crl(revoked_serials(session))
    logger.info("server event=crl_written path=%s", path)
    return path


def revoke(session: Session, ca: FleetCA, device_id: str, actor: str, reason: str) -> RevocationPublic:
    """Revoke ``device_id``: its credential and certificates stop working; the CRL is rewritten."""
    begin_write(session)
    if session.get(Device, device_id) is None:
        raise DeviceNotFoundError(f"device {device_id!r} not found")
    revocation = session.get(DeviceRevocation, device_id)
    now = utcnow()
    if revocation is None:
        revocation = DeviceRevocation(device_id=device_id, revoked_at=now, revoked_by=actor, reason=reason)
        session.add(revocation)
    certificates = session.exec(
        select(DeviceCertificate).where(DeviceCertificate.device_id == device_id,
                                        col(DeviceCertificate.revoked_at).is_(None))
    ).all()
    for certificate in certificates:
        certificate.revoked_at = now
        session.add(certificate)
    session.flush()
    record_audit(session, actor, "device.revoked", {"device_id": device_id, "reason": reason,
                                                   "certificates": [c.serial for c in certificates]})
    session.commit()
    write_crl(session, ca)
    logger.warning("server event=device_revoked device=%s certificates=%d by=%s", device_id, len(certificates),
                   actor)
    return RevocationPublic(device_id=device_id, revoked_at=revocation.revoked_at, revoked_by=revocation.revoked_by,
                            reason=revocation.reason, certificates_revoked=len(certificates))
