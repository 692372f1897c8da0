"""Enrollment against a local server that follows the enrollment contract."""

import json
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from agent.enroll import ENROLLMENT_FILE, ROOT_FILE, enroll, load_enrollment, load_root
from agent.errors import EnrollmentError, NotEnrolledError, ServerUnreachableError, StateFileError
from agent.facts import available_runtimes, sanitized_hostname, total_ram_mb
from agent.protocol.envelope import sign_envelope
from tests.agent.artifact_server import ArtifactServer
from tests.agent.signing import MiniFleet, now


@pytest.fixture
def fleet() -> MiniFleet:
    return MiniFleet()


@pytest.fixture
def server(fleet: MiniFleet) -> Iterator[ArtifactServer]:
    with ArtifactServer(root_document=fleet.root_document, mqtt_url="mqtt://127.0.0.1:1883") as server:
        yield server


def test_enroll_sends_facts_and_stores_credential_and_root(fleet: MiniFleet, server: ArtifactServer,
                                                           tmp_path: Path) -> None:
    enrollment = enroll(server.url + "/", "bootstrap", fleet.facts(), ("kitchen",), "0.1.0", tmp_path)

    sent = [dict(request) for request in server.enrollments]
    csr = sent[0].pop("csr")
    assert sent == [{
        "device_id": "dev-1", "bootstrap_token": "bootstrap", "arch": "x86_64", "ram_mb": 4096,
        "runtimes": ["onnxruntime", "tflite"], "agent_version": "0.1.0", "tags": ["kitchen"],
    }]
    assert "BEGIN CERTIFICATE REQUEST" in csr
    assert (enrollment.device_id, enrollment.credential, enrollment.mqtt_url, enrollment.server_url) == (
        "dev-1", "device-secret", "mqtt://127.0.0.1:1883", server.url)
    assert enrollment.artifact_base_url is None
    assert stat.S_IMODE((tmp_path / ENROLLMENT_FILE).stat().st_mode) == 0o600
    assert load_enrollment(tmp_path) == enrollment
    assert load_root(tmp_path) == fleet.root


def test_re_enrolling_keeps_the_same_root(fleet: MiniFleet, server: ArtifactServer, tmp_path: Path) -> None:
    enroll(server.url, "bootstrap", fleet.facts(), (), "0.1.0", tmp_path)
    enroll(server.url, "bootstrap", fleet.facts(), (), "0.1.0", tmp_path)
    assert len(server.enrollments) == 2


def test_a_bad_bootstrap_token_is_a_clear_error(fleet: MiniFleet, server: ArtifactServer, tmp_path: Path) -> None:
    with pytest.raises(EnrollmentError, match="rejected the bootstrap token"):
        enroll(server.url, "wrong", fleet.facts(), (), "0.1.0", tmp_path)
    assert not (tmp_path / ENROLLMENT_FILE).exists()


def test_a_422_carries_the_servers_detail(fleet: MiniFleet, server: ArtifactServer, tmp_path: Path) -> None:
    facts = fleet.facts()
    bad = type(facts)(facts.device_id, facts.arch, "lots", facts.runtimes)  # type: ignore[arg-type]
    with pytest.raises(EnrollmentError, match=r"HTTP 422\): ram_mb: bad value"):
        enroll(server.url, "bootstrap", bad, (), "0.1.0", tmp_path)


def test_an_unreachable_server(fleet: MiniFleet, tmp_path: Path) -> None:
    with pytest.raises(ServerUnreachableError, match="cannot reach the server"):
        enroll("http://127.0.0.1:9", "bootstrap", fleet.facts(), (), "0.1.0", tmp_path, timeout=2)


def test_a_provisioned_root_must_match(fleet: MiniFleet, server: ArtifactServer, tmp_path: Path) -> None:
    other = MiniFleet()
    (tmp_path / ROOT_FILE).write_text(json.dumps(other.root_document))
    with pytest.raises(EnrollmentError, match="does not match the trusted root.json"):
        enroll(server.url, "bootstrap", fleet.facts(), (), "0.1.0", tmp_path)
    assert json.loads((tmp_path / ROOT_FILE).read_text()) == other.root_document


def test_a_root_that_does_not_verify_is_refused(fleet: MiniFleet, server: ArtifactServer, tmp_path: Path) -> None:
    server.root_document = sign_envelope(fleet.root.to_dict(), [fleet.rollout_key]).to_dict()
    with pytest.raises(EnrollmentError, match="server's root is invalid"):
        enroll(server.url, "bootstrap", fleet.facts(), (), "0.1.0", tmp_path)


def test_an_expired_root_loads_only_when_allowed(tmp_path: Path) -> None:
    expired = MiniFleet(root_expires=now() - timedelta(days=1))
    (tmp_path / ROOT_FILE).write_text(json.dumps(expired.root_document))
    with pytest.raises(StateFileError, match="ExpiredError"):
        load_root(tmp_path)
    assert load_root(tmp_path, allow_expired=True) == expired.root


def test_loading_before_enrolling(tmp_path: Path) -> None:
    with pytest.raises(NotEnrolledError):
        load_enrollment(tmp_path)
    with pytest.raises(NotEnrolledError):
        load_root(tmp_path)


@pytest.mark.parametrize(("hostname", "expected"), [
    ("Pi-Kitchen.local", "pi-kitchen-local"), ("--weird__name--", "weird-name"), ("", "device"),
    ("x" * 80, "x" * 63),
])
def test_device_id_from_hostname(hostname: str, expected: str) -> None:
    assert sanitized_hostname(hostname) == expected


def test_facts_are_detected_without_importing_runtimes(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        3951616 kB\nMemFree: 1 kB\n")
    assert total_ram_mb(meminfo) == 3859
    assert "onnxruntime" in available_runtimes()
