"""Hostile MQTT clients against the broker configured by ``edgefleet broker-config``
(real Mosquitto, TLS with client certificates, CRL, per-device ACL) and the real
server behind it. Assertions are on what arrives at subscribers and at the
server, not on return codes (MQTT 3.1.1 acknowledges a denied publish anyway).
"""

import json
import time
from datetime import timedelta

import httpx
import pytest

from agent.protocol import TopicKind, device_topic
from agent.protocol.messages import PresenceMessage, StatusMessage
from fleet_server.pki import init_ca
from fleet_server.processes import wait_until
from tests.integration.security.secure_fleet import OBSERVER, SecureFleet, TlsFiles, now

pytestmark = pytest.mark.slow

DEVICE_TOPICS = (TopicKind.STATUS, TopicKind.TELEMETRY, TopicKind.PRESENCE, TopicKind.DIRECTIVE)


@pytest.fixture(scope="module")
def devices(fleet: SecureFleet) -> dict[str, tuple[str, object]]:
    return {device_id: fleet.enroll(device_id) for device_id in ("sec-a", "sec-b")}


def topics_of(messages: list) -> list[str]:
    return [message.topic for message in messages]


def server_device(fleet: SecureFleet, device_id: str) -> dict:
    with fleet.admin() as client:
        return client.device(device_id)


def test_a_device_cannot_publish_as_another_or_read_anything_but_its_directive(
        fleet: SecureFleet, devices: dict) -> None:
    observer = fleet.connect(fleet.identity(OBSERVER), "sec-observer")
    observer.subscribe(*(f"edgefleet/v1/+/{kind.value}" for kind in (TopicKind.STATUS, TopicKind.TELEMETRY,
                                                                      TopicKind.PRESENCE)))
    a = fleet.connect(devices["sec-a"][1], "sec-a")
    b = fleet.connect(devices["sec-b"][1], "sec-b")
    assert a.connected and b.connected and observer.connected
    b.subscribe(device_topic("sec-b", TopicKind.DIRECTIVE))
    a.subscribe("#", "$SYS/#", "edgefleet/v1/+/directive", device_topic("sec-b", TopicKind.DIRECTIVE))
    time.sleep(0.5)

    spoofed = StatusMessage("sec-b", "failed", 7, "stolen", 1, reason="spoofed by sec-a").encode()
    for kind in DEVICE_TOPICS:
        a.publish(device_topic("sec-b", kind), spoofed, retain=kind is TopicKind.DIRECTIVE)
    a.publish(device_topic("sec-a", TopicKind.STATUS), StatusMessage("sec-b", "failed", 8).encode())  # lies inside
    marker = PresenceMessage("sec-a", True, agent_version="marker").encode()
    a.publish(device_topic("sec-a", TopicKind.PRESENCE), marker)
    server_id = fleet.identity("edgefleet.server")
    server = fleet.connect(server_id, "sec-test-server")
    server.publish(device_topic("sec-b", TopicKind.DIRECTIVE), b"a directive for sec-b only")

    wait_until(lambda: any(m.payload == marker for m in list(observer.messages.queue)), 10, "the marker")
    time.sleep(0.5)
    seen = observer.drain()
    assert [m.topic for m in seen if "sec-b" in m.topic] == []
    assert device_topic("sec-a", TopicKind.PRESENCE) in topics_of(seen)
    assert topics_of(b.drain()) == [device_topic("sec-b", TopicKind.DIRECTIVE)]
    assert a.drain() == []  # '#' and the other device's directive topic deliver nothing
    wait_until(lambda: server_device(fleet, "sec-a")["agent_version"] == "marker" or
               server_device(fleet, "sec-a")["online"], 10, "the server to ingest sec-a's presence")
    victim = server_device(fleet, "sec-b")
    assert victim["deployment_state"] is None and victim["online"] is False and victim["latest_deployment"] is None


def test_reusing_another_devices_client_id_reads_nothing_of_it(fleet: SecureFleet, devices: dict) -> None:
    impostor = fleet.connect(devices["sec-a"][1], "sec-b", clean_session=False)
    assert impostor.connected
    impostor.subscribe(device_topic("sec-b", TopicKind.DIRECTIVE))
    fleet.connect(fleet.identity("edgefleet.server"), "sec-test-server-2").publish(
        device_topic("sec-b", TopicKind.DIRECTIVE), b"still only for sec-b")
    time.sleep(1.0)
    assert impostor.drain() == []


def test_no_certificate_another_ca_or_an_expired_certificate_cannot_connect(fleet: SecureFleet, devices: dict,
                                                                           tmp_path) -> None:
    genuine = devices["sec-a"][1]
    assert fleet.connect(genuine, "sec-a-again").connected
    no_certificate = TlsFiles(None, None, genuine.ca)  # type: ignore[arg-type]
    assert not fleet.connect(no_certificate, "sec-nocert").connected
    rogue_ca = init_ca(tmp_path / "rogue-ca", common_name="EdgeFleet fleet CA")  # same name, other key
    assert not fleet.connect(fleet.identity("sec-a", ca=rogue_ca), "sec-rogue").connected
    expired = fleet.identity("sec-a", lifetime=timedelta(days=1), now=now() - timedelta(days=3))
    assert not fleet.connect(expired, "sec-expired").connected


def test_a_revoked_device_is_refused_by_the_api_at_once_and_by_the_broker_after_reload(fleet: SecureFleet) -> None:
    credential, files = fleet.enroll("sec-revoked")
    headers = {"Authorization": f"Bearer {credential}"}
    assert httpx.get(f"{fleet.server.url}/api/v1/root", headers=headers).status_code == 200
    before = fleet.connect(files, "sec-revoked")
    assert before.connected
    with fleet.admin() as admin:
        revocation = admin.revoke_device("sec-revoked", "lost in transit")
    assert revocation["certificates_revoked"] == 1
    renew = httpx.post(f"{fleet.server.url}/api/v1/devices/me/certificate", headers=headers,
                       json={"csr": "irrelevant"})
    assert renew.status_code == 401  # the credential is refused immediately
    crl = httpx.get(f"{fleet.server.url}/api/v1/pki/crl.pem").content
    assert crl == (fleet.key_dir / "ca" / "crl.pem").read_bytes() or b"BEGIN X509 CRL" in crl
    fleet.reload_broker()
    assert not fleet.connect(files, "sec-revoked").connected
    again = httpx.post(f"{fleet.server.url}/api/v1/devices/enroll", json={
        "device_id": "sec-revoked", "bootstrap_token": fleet.bootstrap_token(), "arch": "x86_64", "ram_mb": 1,
        "runtimes": [], "agent_version": "x"})
    assert again.status_code == 409 and "revoked" in again.json()["detail"]
    with fleet.admin() as admin:
        actions = [entry["action"] for entry in admin.audit_entries(limit=1000)]
        assert {"device.enrolled", "device.revoked", "bootstrap_token.issued"} <= set(actions)
        assert admin.audit_verify()["ok"]


def test_the_server_identity_cannot_be_claimed_by_enrollment(fleet: SecureFleet) -> None:
    answer = httpx.post(f"{fleet.server.url}/api/v1/devices/enroll", json={
        "device_id": "edgefleet.server", "bootstrap_token": fleet.bootstrap_token(), "arch": "x86_64",
        "ram_mb": 1, "runtimes": [], "agent_version": "x"})
    assert answer.status_code == 422
    assert json.loads(answer.text)["detail"].startswith("body.device_id")
