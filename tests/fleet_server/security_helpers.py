"""Shared by the security tests: tokens with each role, device CSRs, auth headers."""

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fleet_server.conftest import Api


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def issue_token(api: Api, role: str, name: str | None = None, **fields: Any) -> str:
    response = api.post("/tokens", json={"name": name or f"{role}-token", "role": role, **fields})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def make_csr(common_name: str, key: ec.EllipticCurvePrivateKey | None = None) -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii"), key


def bootstrap_token(api: Api, device_id: str | None = None, ttl_s: int = 3600) -> str:
    response = api.post("/bootstrap-tokens", json={"device_id": device_id, "ttl_s": ttl_s})
    assert response.status_code == 201, response.text
    return response.json()["token"]
