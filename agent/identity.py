"""The device's TLS identity: its own EC P-256 key (generated here, never sent
anywhere), the client certificate the fleet CA issued for it (CN = device id)
and the fleet CA certificate that verifies the broker and, over https, the
server.

Key and certificate live together in ``identity.pem`` (mode 0600, written
atomically), so a renewal interrupted by a power cut leaves the old pair or
the new pair, never a key without its certificate. ``fleet-ca.pem`` is the CA.
"""

import logging
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.errors import StateFileError
from agent.storage import atomic_write_bytes

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.pem"
CA_FILE = "fleet-ca.pem"
RENEW_AFTER_FRACTION = 2 / 3  # renew once two thirds of the lifetime have passed
MAX_PEM_BYTES = 64 * 1024


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: ec.EllipticCurvePrivateKey, device_id: str) -> str:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def renewal_due(not_before: datetime, not_after: datetime, now: datetime,
                fraction: float = RENEW_AFTER_FRACTION) -> bool:
    """Pure: has ``fraction`` of the certificate's lifetime passed (or is it expired)?"""
    return now >= not_before + (not_after - not_before) * fraction


def renewal_time(not_before: datetime, not_after: datetime, fraction: float = RENEW_AFTER_FRACTION) -> datetime:
    return not_before + (not_after - not_before) * fraction


@dataclass(frozen=True)
class Identity:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def common_name(self) -> str | None:
        names = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else None


def parse_certificate(pem: str | bytes, key: ec.EllipticCurvePrivateKey, device_id: str) -> x509.Certificate:
    """The certificate the server returned, checked: PEM, our key, our device id."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise StateFileError(f"the server's certificate is not PEM: {exc}") from None
    if certificate.public_key() != key.public_key():
        raise StateFileError("the server's certificate is not for this device's key")
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != device_id:
        raise StateFileError(f"the server's certificate is not for device {device_id}")
    return certificate


def save_identity(data_dir: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()) + certificate.public_bytes(serialization.Encoding.PEM)
    atomic_write_bytes(Path(data_dir) / IDENTITY_FILE, pem, mode=0o600)


def save_ca(data_dir: Path, pem: str) -> None:
    try:
        x509.load_pem_x509_certificate(pem.encode("ascii", "replace"))
    except ValueError as exc:
        raise StateFileError(f"the server's CA certificate is not PEM: {exc}") from None
    atomic_write_bytes(Path(data_dir) / CA_FILE, pem.encode("ascii"))


def load_identity(data_dir: Path) -> Identity | None:
    path = Path(data_dir) / IDENTITY_FILE
    try:
        data = path.read_bytes()[:MAX_PEM_BYTES]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"cannot read {path}: {exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise StateFileError(f"{path} does not hold a key and a certificate: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or certificate.public_key() != key.public_key():
        raise StateFileError(f"{path}: the certificate is not for the key")
    return Identity(certificate, key)


def ca_path(data_dir: Path) -> Path | None:
    path = Path(data_dir) / CA_FILE
    return path if path.exists() else None


def mqtt_tls_context(data_dir: Path) -> ssl.SSLContext:
    """TLS to the broker: verify it against the fleet CA (else the system's CAs), present our certificate."""
    ca = ca_path(data_dir)
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    identity_file = Path(data_dir) / IDENTITY_FILE
    if identity_file.exists():
        context.load_cert_chain(str(identity_file))
    return context


def https_context(data_dir: Path) -> ssl.SSLContext:
    """TLS to the fleet server: the system's CAs plus the fleet CA."""
    context = ssl.create_default_context()
    ca = ca_path(data_dir)
    if ca is not None:
        context.load_verify_locations(cafile=str(ca))
    return context


def describe(identity: Identity | None) -> str:
    if identity is None:
        return "none"
    return f"cn={identity.common_name} not_after={identity.not_after.isoformat()}"


def lifetime(identity: Identity) -> timedelta:
    return identity.not_after - identity.not_before
