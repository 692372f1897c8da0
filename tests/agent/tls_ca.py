"""A throwaway X.509 CA for agent tests (cryptography only; the legacy venv runs these tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class TestCA:
    __test__ = False

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        moment = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(moment - timedelta(minutes=5)).not_valid_after(moment + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.issued: list[x509.Certificate] = []

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def certify(self, csr_pem: str, lifetime: timedelta = timedelta(days=7), age: timedelta = timedelta(0),
                common_name: str | None = None) -> str:
        """Certify the CSR's key (CN from the CSR unless given); ``age`` moves the validity into the past."""
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        cn = common_name or csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        start = datetime.now(UTC) - age
        certificate = (
            x509.CertificateBuilder().subject_name(_name(str(cn))).issuer_name(self.certificate.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + lifetime)
            .sign(self.key, hashes.SHA256())
        )
        self.issued.append(certificate)
        return certificate.public_bytes(serialization.Encoding.PEM).decode()
