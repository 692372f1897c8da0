"""The device's own TLS identity: key generated on the device, CSR at enrollment,
certificate stored with its key (0600), renewal before expiry, https/MQTT contexts."""

import json
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509

from agent import identity
from agent.cert_renewal import CertificateRenewer
from agent.enroll import ENROLLMENT_FILE, enroll
from agent.errors import EnrollmentError
from tests.agent.artifact_server import ArtifactServer
from tests.agent.signing import MiniFleet
from tests.agent.tls_ca import TestCA


@pytest.fixture
def fleet() -> MiniFleet:
    return MiniFleet()


@pytest.fixture
def server(fleet: MiniFleet) -> Iterator[ArtifactServer]:
    with ArtifactServer(root_document=fleet.root_document) as server:
        yield server


def test_enrollment_stores_the_certificate_for_the_devices_own_key(fleet: MiniFleet, server: ArtifactServer,
                                                                   tmp_path: Path) -> None:
    ca = TestCA()
    server.certify = lambda request: {"certificate": ca.certify(request["csr"]), "ca_certificate": ca.pem}
    enroll(server.url, "bootstrap", fleet.facts(), (), "0.1.0", tmp_path)
    stored = identity.load_identity(tmp_path)
    assert stored is not None and stored.common_name == "dev-1"
    assert stored.certificate.public_key() == stored.key.public_key()
    assert stat.S_IMODE((tmp_path / identity.IDENTITY_FILE).stat().st_mode) == 0o600
    assert (tmp_path / identity.CA_FILE).read_text() == ca.pem
    csr = x509.load_pem_x509_csr(server.enrollments[0]["csr"].encode())
    assert csr.is_signature_valid and csr.public_key() == stored.key.public_key()
    assert "PRIVATE KEY" not in json.dumps(server.enrollments)


@pytest.mark.parametrize("answer", ["other_key", "other_device", "garbage"])
def test_a_certificate_that_is_not_ours_fails_the_enrollment(fleet: MiniFleet, server: ArtifactServer,
                                                            tmp_path: Path, answer: str) -> None:
    ca = TestCA()
    foreign_csr = identity.make_csr(identity.new_key(), "dev-1")

    def certify(request: dict) -> dict:
        if answer == "other_key":
            return {"certificate": ca.certify(foreign_csr)}
        if answer == "other_device":
            return {"certificate": ca.certify(request["csr"], common_name="dev-2")}
        return {"certificate": "not a certificate"}

    server.certify = certify
    with pytest.raises(EnrollmentError, match="certificate"):
        enroll(server.url, "bootstrap", fleet.facts(), (), "0.1.0", tmp_path)
    assert not (tmp_path / ENROLLMENT_FILE).exists()
    assert identity.load_identity(tmp_path) is None


def test_renewal_is_due_after_two_thirds_of_the_lifetime() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=3)
    assert not identity.renewal_due(start, end, start + timedelta(days=1))
    assert not identity.renewal_due(start, end, start + timedelta(days=2) - timedelta(seconds=1))
    assert identity.renewal_due(start, end, start + timedelta(days=2))
    assert identity.renewal_due(start, end, end + timedelta(days=10))


class RenewalServer:
    """``POST /api/v1/devices/me/certificate``: certifies the CSR when the bearer credential matches."""

    def __init__(self, ca: TestCA, credential: str) -> None:
        self.ca, self.credential, self.requests = ca, credential, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests += 1
                if self.headers.get("Authorization") != f"Bearer {outer.credential}":
                    self.send_response(401)
                    self.end_headers()
                    return
                answer = json.dumps({"certificate": outer.ca.certify(body["csr"]), "ca_certificate": outer.ca.pem})
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


def stored_identity(tmp_path: Path, ca: TestCA, age: timedelta) -> identity.Identity:
    key = identity.new_key()
    certificate = x509.load_pem_x509_certificate(ca.certify(identity.make_csr(key, "dev-1"),
                                                            timedelta(days=3), age).encode())
    identity.save_identity(tmp_path, key, certificate)
    loaded = identity.load_identity(tmp_path)
    assert loaded is not None
    return loaded


def test_a_due_certificate_is_renewed_with_a_new_key(tmp_path: Path) -> None:
    ca = TestCA()
    server = RenewalServer(ca, "device-secret")
    try:
        old = stored_identity(tmp_path, ca, age=timedelta(days=2, hours=1))
        reloaded: list[bool] = []
        renewer = CertificateRenewer(tmp_path, "dev-1", server.url, "device-secret", lambda: datetime.now(UTC),
                                     lambda: reloaded.append(True))
        assert renewer.seconds_until_due() == 0
        assert renewer.renew_if_due()
        new = identity.load_identity(tmp_path)
        assert new is not None and new.not_after > old.not_after and reloaded == [True]
        assert new.key.public_key() != old.key.public_key()
        assert not renewer.renew_if_due() and server.requests == 1  # fresh again: nothing to do
        context = identity.mqtt_tls_context(tmp_path)  # loads the renewed pair
        assert context.verify_mode.name == "CERT_REQUIRED"
    finally:
        server.httpd.shutdown()


def test_a_refused_renewal_keeps_the_old_certificate(tmp_path: Path) -> None:
    ca = TestCA()
    server = RenewalServer(ca, "device-secret")
    try:
        old = stored_identity(tmp_path, ca, age=timedelta(days=2, hours=1))
        renewer = CertificateRenewer(tmp_path, "dev-1", server.url, "revoked-credential", lambda: datetime.now(UTC),
                                     lambda: None)
        with pytest.raises(EnrollmentError, match="HTTP 401"):
            renewer.renew_if_due()
        kept = identity.load_identity(tmp_path)
        assert kept is not None and kept.certificate == old.certificate
    finally:
        server.httpd.shutdown()
