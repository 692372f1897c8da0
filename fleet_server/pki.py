"""The fleet CA (X.509, EC P-256): device client certificates from CSRs, the
broker's TLS certificate, the server's MQTT client identity, and the CRL.

A CA directory (``<key dir>/ca``) holds ``ca.pem`` (public), ``ca-key.pem``
(0600), ``crl.pem`` (the revocation list the broker loads) and the server's
MQTT client identity ``server-client.pem`` / ``server-client-key.pem``. The CA
signs TLS identities only; model releases and directives are signed by the
Ed25519 keys of the keyring (``fleet_server.keyring``), which the CA cannot
replace.
"""

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.protocol.errors import InvalidDeviceIdError
from agent.protocol.topics import validate_device_id
from agent.storage import atomic_write_bytes, write_private_key
from fleet_server.errors import CertificateRequestError, KeyringError
from fleet_server.mqtt.acl import SERVER_IDENTITY

log = logging.getLogger(__name__)

CA_DIR = "ca"
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
CRL_FILE = "crl.pem"
SERVER_CLIENT_CERT_FILE = "server-client.pem"
SERVER_CLIENT_KEY_FILE = "server-client-key.pem"
CA_DAYS = 3650
SERVER_IDENTITY_DAYS = 365
RENEW_WITHIN = timedelta(days=30)
CRL_DAYS = 365  # the broker refuses every client once the CRL's next update has passed
CLOCK_SKEW = timedelta(minutes=5)
ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).replace(microsecond=0)


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def serial_hex(serial: int) -> str:
    return format(serial, "x")


@dataclass(frozen=True)
class FleetCA:
    directory: Path
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def certificate_pem(self) -> bytes:
        return cert_pem(self.certificate)

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT_FILE

    @property
    def crl_path(self) -> Path:
        return self.directory / CRL_FILE

    @property
    def server_client_paths(self) -> tuple[Path, Path]:
        return self.directory / SERVER_CLIENT_CERT_FILE, self.directory / SERVER_CLIENT_KEY_FILE

    def _builder(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, not_before: datetime,
                 not_after: datetime) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(min(not_after, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )

    def issue_client(self, common_name: str, public_key: ec.EllipticCurvePublicKey, lifetime: timedelta,
                     now: datetime | None = None) -> x509.Certificate:
        """A TLS client certificate (CN = the MQTT identity) valid for ``lifetime`` from now."""
        moment = _now(now)
        builder = self._builder(_name(common_name), public_key, moment - CLOCK_SKEW, moment + lifetime)
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False), critical=True,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_device(self, csr_pem: str | bytes, device_id: str, lifetime: timedelta,
                     now: datetime | None = None) -> x509.Certificate:
        """Check the device's CSR (signature, key type, CN = ``device_id``) and certify its key."""
        csr = parse_device_csr(csr_pem, device_id)
        public_key = csr.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        return self.issue_client(device_id, public_key, lifetime, now)

    def issue_server(self, hostnames: Iterable[str], lifetime: timedelta,
                     now: datetime | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A TLS server certificate (for the broker) naming ``hostnames`` (DNS names or IP addresses)."""
        names = list(dict.fromkeys(hostnames))
        if not names:
            raise KeyringError("a server certificate needs at least one host name or IP address")
        key = new_private_key()
        moment = _now(now)
        builder = self._builder(_name(names[0]), key.public_key(), moment - CLOCK_SKEW, moment + lifetime)
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                                        critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def build_crl(self, revoked: Iterable[tuple[str, datetime]], now: datetime | None = None) -> bytes:
        """The PEM CRL listing ``revoked`` (serial hex, revocation time)."""
        moment = _now(now)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(moment - CLOCK_SKEW)
            .next_update(moment + timedelta(days=CRL_DAYS))
            .add_extension(x509.CRLNumber(int(moment.timestamp() * 1000)), critical=False)
        )
        for serial, revoked_at in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(serial, 16))
                .revocation_date(revoked_at.astimezone(UTC).replace(microsecond=0)).build()
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def write_crl(self, revoked: Iterable[tuple[str, datetime]], now: datetime | None = None) -> Path:
        atomic_write_bytes(self.crl_path, self.build_crl(revoked, now))
        return self.crl_path

    def ensure_server_identity(self, now: datetime | None = None) -> tuple[Path, Path]:
        """The server's MQTT client certificate (CN ``edgefleet.server``), reissued when it nears expiry."""
        cert_path, key_path = self.server_client_paths
        moment = _now(now)
        if cert_path.exists() and key_path.exists():
            current = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if current.not_valid_after_utc - moment > RENEW_WITHIN and current.issuer == self.certificate.subject:
                return cert_path, key_path
        key = new_private_key()
        certificate = self.issue_client(SERVER_IDENTITY, key.public_key(), timedelta(days=SERVER_IDENTITY_DAYS),
                                        moment)
        write_private_key(key_path, key_pem(key))
        atomic_write_bytes(cert_path, cert_pem(certificate))
        log.info("server event=server_identity_issued cn=%s not_after=%s", SERVER_IDENTITY,
                 certificate.not_valid_after_utc.isoformat())
        return cert_path, key_path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def parse_device_csr(csr_pem: str | bytes, device_id: str) -> x509.CertificateSigningRequest:
    data = csr_pem.encode("ascii", "replace") if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateRequestError("csr is not a PEM certificate signing request") from None
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ACCEPTED_CURVES):
        raise CertificateRequestError("the CSR key must be an EC P-256 or P-384 key")
    try:
        if not csr.is_signature_valid:
            raise CertificateRequestError("the CSR signature does not verify")
    except (InvalidSignature, UnsupportedAlgorithm):
        raise CertificateRequestError("the CSR signature does not verify") from None
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = names[0].value if len(names) == 1 else None
    if common_name != device_id:
        raise CertificateRequestError(f"the CSR common name must be the device id {device_id!r}, "
                                      f"not {common_name!r}")
    try:
        validate_device_id(common_name)
    except InvalidDeviceIdError as exc:
        raise CertificateRequestError(str(exc)) from None
    return csr


def init_ca(directory: Path, common_name: str = "EdgeFleet fleet CA", now: datetime | None = None) -> FleetCA:
    """Create a CA (key 0600, self-signed certificate, empty CRL) in ``directory``; never overwrites."""
    directory = Path(directory)
    if (directory / CA_KEY_FILE).exists() or (directory / CA_CERT_FILE).exists():
        raise KeyringError(f"{directory} already holds a CA; refusing to overwrite it")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = new_private_key()
    moment = _now(now)
    subject = _name(common_name)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - CLOCK_SKEW)
        .not_valid_after(moment + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private_key(directory / CA_KEY_FILE, key_pem(key))
    atomic_write_bytes(directory / CA_CERT_FILE, cert_pem(certificate))
    ca = FleetCA(directory, certificate, key)
    ca.write_crl([], moment)
    log.info("server event=ca_created directory=%s not_after=%s", directory,
             certificate.not_valid_after_utc.isoformat())
    return ca


def load_ca(directory: Path) -> FleetCA:
    directory = Path(directory)
    try:
        certificate = x509.load_pem_x509_certificate((directory / CA_CERT_FILE).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY_FILE).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise KeyringError(f"{directory} holds no fleet CA ({exc.filename} is missing)",
                           hint="'edgefleet keys init' creates it; the server creates one on first start") from None
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise KeyringError(f"cannot load the fleet CA from {directory}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != certificate.public_key():
        raise KeyringError(f"{directory / CA_KEY_FILE} is not the key of {directory / CA_CERT_FILE}")
    return FleetCA(directory, certificate, key)


def open_ca(directory: Path) -> FleetCA:
    """Load the CA in ``directory``, creating it on first use."""
    if not (Path(directory) / CA_CERT_FILE).exists():
        return init_ca(directory)
    return load_ca(directory)
