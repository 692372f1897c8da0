"""Hostile directives and artifacts against a real agent process, over the real
wire: Mosquitto from ``edgefleet broker-config`` (TLS, client certificates,
ACL), the real server, and an agent enrolled with a single-use bootstrap
token. The attacker here is stronger than a device: it holds a certificate
that may publish directives (a compromised broker account) and, for some
cases, the online rollout key. Each attack must be rejected with its reason
reported on the status topic, install nothing, and leave v2 serving.
"""

import json
import secrets
import sqlite3
import stat
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.protocol import Action, Directive, ReleaseRef, TopicKind, device_topic
from agent.protocol.envelope import Envelope, sign_envelope
from agent.protocol.keys import Ed25519PrivateKey, generate_private_key
from agent.protocol.messages import DirectiveMessage, StatusMessage
from fleet_server.cli import app
from fleet_server.client import FleetClient, FleetClientError
from fleet_server.keyring import Keyring, load_keyring
from fleet_server.localfleet import LocalAgent
from fleet_server.processes import wait_until
from fleet_server.services.artifact_store import ArtifactStore
from fleet_server.services.offline_release import sign_request
from tests.faults.toolkit.proxy import FaultProxy
from tests.integration.conftest import MODELS, publish_release, target_state, unique_model
from tests.integration.security.secure_fleet import OBSERVER, SecureFleet, TlsClient, now

pytestmark = pytest.mark.slow

DEVICE = "sec-agent"
NAME = "digits-secure"
AGENT_ENV = {
    "EDGEFLEET_AGENT_DOWNLOAD_TIMEOUT_S": "2",
    "EDGEFLEET_AGENT_DOWNLOAD_RETRY_BASE_S": "0.2",
    "EDGEFLEET_AGENT_DOWNLOAD_RETRY_MAX_S": "0.5",
    "EDGEFLEET_AGENT_DOWNLOAD_MAX_ATTEMPTS": "2",
    "EDGEFLEET_AGENT_HEARTBEAT_INTERVAL_S": "5",
}


class Wire:
    """The attacker's publisher and the observer that reads what the agent reports."""

    def __init__(self, fleet: SecureFleet) -> None:
        self.directive_topic = device_topic(DEVICE, TopicKind.DIRECTIVE)
        suffix = secrets.token_hex(3)  # one client id per connection: a reused id takes the session over
        self.publisher = fleet.connect(fleet.identity("edgefleet.server"), f"sec-attacker-{suffix}")
        self.observer: TlsClient = fleet.connect(fleet.identity(OBSERVER), f"sec-agent-observer-{suffix}")
        self.observer.subscribe(device_topic(DEVICE, TopicKind.STATUS))
        self.reports: list[StatusMessage] = []
        assert self.publisher.connected and self.observer.connected

    def statuses(self, sequence: int) -> list[StatusMessage]:
        self.reports += [StatusMessage.decode(message.payload) for message in self.observer.drain()]
        return [report for report in self.reports if report.sequence == sequence]

    def final_report(self, sequence: int, timeout: float = 60.0) -> StatusMessage:
        def final() -> StatusMessage | None:
            done = [r for r in self.statuses(sequence) if r.state in ("succeeded", "failed", "rolled_back",
                                                                       "rejected")]
            return done[-1] if done else None

        return wait_until(final, timeout, f"the agent's final report for directive {sequence}")

    def send(self, directive: dict[str, Any], release: dict[str, Any], retain: bool = True) -> None:
        self.publisher.publish(self.directive_topic, DirectiveMessage(directive, release).encode(), retain=retain)


def directive(release: dict[str, Any], sequence: int, key: Ed25519PrivateKey, device_id: str = DEVICE,
              action: Action = Action.INSTALL, expires_in: timedelta = timedelta(hours=1)) -> dict[str, Any]:
    signed = release["signed"]
    reference = ReleaseRef(signed["name"], signed["version"], Envelope.from_dict(release).sha256())
    issued = now().replace(microsecond=0) - timedelta(minutes=5)
    document = Directive(device_id, sequence, action, reference, issued, issued + timedelta(minutes=5) + expires_in)
    return sign_envelope(document.to_dict(), [key]).to_dict()


def resigned(release: dict[str, Any], key: Ed25519PrivateKey, **changes: Any) -> dict[str, Any]:
    signed = json.loads(json.dumps(release["signed"]))
    for field, value in changes.items():
        if field.startswith("variant_"):
            signed["variants"][0][field.removeprefix("variant_")] = value
        else:
            signed[field] = value
    return sign_envelope(signed, [key]).to_dict()


@pytest.fixture(scope="module")
def proxy(fleet: SecureFleet) -> Iterator[FaultProxy]:
    with FaultProxy(fleet.server.port, name="sec-artifacts") as proxy:
        yield proxy


@pytest.fixture(scope="module")
def agent(fleet: SecureFleet, proxy: FaultProxy) -> Iterator[LocalAgent]:
    agent = LocalAgent(DEVICE, fleet.root / DEVICE,
                       extra_env={**AGENT_ENV, "EDGEFLEET_AGENT_ARTIFACT_BASE_URL": proxy.url})
    agent.enroll(fleet.server.url, fleet.bootstrap_token(DEVICE))
    agent.start()
    agent.wait_serving()
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def installed(fleet: SecureFleet, agent: LocalAgent, tmp_path_factory: pytest.TempPathFactory) -> LocalAgent:
    """The agent took v1 then v2 through the server, over TLS with its own certificate."""
    models = tmp_path_factory.mktemp("secure-models")
    with fleet.admin() as admin:
        for version in (1, 2):
            assert publish_release(admin, unique_model(MODELS / "digits_mlp.onnx", models, f"v{version}"),
                                   NAME) == version
            assert deploy(admin, version)["state"] == "succeeded"
    return agent


def deploy(admin: FleetClient, version: int) -> dict[str, Any]:
    deployment = admin.deploy(NAME, version, device_ids=[DEVICE])
    return target_state(admin.wait_for_deployment(deployment["id"], timeout=90), DEVICE)


def served_version(agent: LocalAgent) -> int:
    metadata = json.loads(agent_get(agent, f"/v2/models/{NAME}"))
    return int(metadata["versions"][0])


def agent_get(agent: LocalAgent, path: str) -> str:
    with urllib.request.urlopen(agent.inference_url + path, timeout=10) as response:
        return response.read().decode()


def test_enrolled_agent_holds_its_own_certificate_and_installs_over_tls(fleet: SecureFleet,
                                                                        installed: LocalAgent) -> None:
    identity_file = installed.data_dir / "identity.pem"
    assert stat.S_IMODE(identity_file.stat().st_mode) == 0o600
    assert json.loads((installed.data_dir / "enrollment.json").read_text())["mqtt_url"] == fleet.mqtt_url
    secret = json.loads((installed.data_dir / "enrollment.json").read_text())["credential"]
    logs = [installed.process.log_text() if installed.process else "", fleet.server.process.log_text()
            if fleet.server.process else "", fleet.broker.log_text()]
    assert not any(secret in log or "PRIVATE KEY" in log for log in logs)  # secrets never reach a log
    with fleet.admin() as admin:
        tokens = admin.bootstrap_tokens(include_inactive=True)
    assert [t["used_by"] for t in tokens if t["device_id"] == DEVICE] == [DEVICE]  # single use, spent
    assert served_version(installed) == 2


def test_hostile_directives_are_rejected_with_their_reason(fleet: SecureFleet, installed: LocalAgent) -> None:
    keys: Keyring = load_keyring(fleet.key_dir)
    wire = Wire(fleet)
    with fleet.admin() as admin:
        v1, v2 = (admin.release(NAME, version)["envelope"] for version in (1, 2))
        rollout_only = resigned(v2, keys.rollout_key, version=9)
        with pytest.raises(FleetClientError) as refused:
            admin.submit_signed_release(rollout_only)
        assert refused.value.status_code == 422 and "WrongRoleError" in str(refused.value)
    traversal = resigned(v2, keys.release_key, version=10, variant_path="../../../../tmp/evil.onnx")
    attacks = [
        ("forged", directive(v2, 101, generate_private_key()), v2, "UnknownSignerError"),
        ("expired", directive(v2, 102, keys.rollout_key, expires_in=-timedelta(minutes=10)), v2, "ExpiredError"),
        ("other device", directive(v2, 103, keys.rollout_key, device_id="sec-other"), v2, "WrongDeviceError"),
        ("downgrade", directive(v1, 104, keys.rollout_key), v1, "DowngradeError"),
        ("rollout-signed release", directive(rollout_only, 105, keys.rollout_key), rollout_only, "WrongRoleError"),
        ("path traversal", directive(traversal, 106, keys.rollout_key), traversal, "UnsafePathError"),
    ]
    for what, document, release, reason in attacks:
        wire.send(document, release)
        report = wire.final_report(document["signed"]["sequence"], timeout=30)
        assert (report.state, (report.reason or "").split(":")[0]) == ("rejected", reason), what
    assert served_version(installed) == 2


def test_a_replayed_directive_is_ignored_even_when_retained(fleet: SecureFleet, installed: LocalAgent) -> None:
    agent = installed
    wire = Wire(fleet)
    with sqlite3.connect(fleet.server.data_dir / "edgefleet.db") as database:
        (old,) = database.execute("SELECT directive FROM deployment_target WHERE device_id = ? AND sequence = 1",
                                  (DEVICE,)).fetchone()
    with fleet.admin() as admin:
        v1 = admin.release(NAME, 1)["envelope"]
    before = agent.process.log_text().count("reason=replay") if agent.process else 0
    wire.send(json.loads(old), v1, retain=True)
    wait_until(lambda: agent.process is not None and agent.process.log_text().count("reason=replay") > before, 20,
               "the agent to drop the replayed directive")
    time.sleep(0.5)
    assert wire.statuses(1) == []  # nothing re-reported for the old sequence
    assert served_version(agent) == 2


def test_a_rotated_root_reaches_the_agent_and_the_dropped_key_stops_working(fleet: SecureFleet,
                                                                           installed: LocalAgent,
                                                                           tmp_path: Path) -> None:
    old_rollout = load_keyring(fleet.key_dir).rollout_key
    runner = CliRunner()
    rotated = runner.invoke(app, ["keys", "rotate-root", str(fleet.key_dir), "--rotate-rollout"])
    assert rotated.exit_code == 0, rotated.output
    reloaded = runner.invoke(app, ["keys", "reload", "--server", fleet.server.url, "--token",
                                   fleet.server.admin_token, "--json"])
    assert reloaded.exit_code == 0 and json.loads(reloaded.output)["new_root_versions"] == [2], reloaded.output
    wire = Wire(fleet)
    with fleet.admin() as admin:
        version = publish_release(admin, unique_model(MODELS / "digits_mlp.onnx", tmp_path, "after-rotation"), NAME)
        assert deploy(admin, version)["state"] == "succeeded"  # signed by the new rollout key
        release = admin.release(NAME, version)["envelope"]
        sequence = admin.device(DEVICE)["directive_sequence"]
        assert "root.rotated" in {entry["action"] for entry in admin.audit_entries(limit=1000)}
    assert json.loads((installed.data_dir / "root.json").read_text())["signed"]["version"] == 2
    wire.send(directive(release, sequence + 1, old_rollout), release)
    report = wire.final_report(sequence + 1)
    assert report.state == "rejected" and report.reason.startswith("UnknownSignerError")
    assert served_version(installed) == version


def test_tampered_long_and_stalled_artifacts_install_nothing(fleet: SecureFleet, installed: LocalAgent,
                                                             proxy: FaultProxy, tmp_path: Path) -> None:
    agent = installed
    serving = served_version(agent)
    keys = load_keyring(fleet.key_dir)
    wire = Wire(fleet)
    store = ArtifactStore(fleet.server.data_dir / "artifacts")
    with fleet.admin() as admin:
        v3 = publish_release(admin, unique_model(MODELS / "digits_mlp.onnx", tmp_path, "tampered"), NAME)
        stored = store.find(admin.release(NAME, v3)["variants"][0]["sha256"])
        assert stored is not None
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0xFF  # storage or CDN tampering: same length, other bytes
        stored.write_bytes(bytes(data))
        tampered = deploy(admin, v3)
        assert tampered["state"] == "rejected" and tampered["reason"].startswith("ArtifactMismatchError")

        v4 = admin.upload_model(unique_model(MODELS / "digits_mlp.onnx", tmp_path, "long"), NAME)["version"]
        request = admin.release_request(NAME, v4)
        too_short = json.loads(json.dumps(request))
        too_short["release"]["variants"][0]["length"] -= 100
        lying = sign_request(too_short, [keys.release_key], keys.root)
        with pytest.raises(FleetClientError) as refused:
            admin.submit_signed_release(lying)  # the server checks lengths against what it stores
        assert refused.value.status_code == 422
        honest = sign_request(request, [keys.release_key], keys.root)
        admin.submit_signed_release(honest)
        sequence = admin.device(DEVICE)["directive_sequence"]

    wire.send(directive(lying, sequence + 1, keys.rollout_key), lying)
    longer = wire.final_report(sequence + 1)
    assert longer.state == "rejected" and longer.reason.startswith("ArtifactMismatchError")

    proxy.partition()  # the artifact server stops answering mid-flight
    try:
        wire.send(directive(honest, sequence + 2, keys.rollout_key), honest)
        stalled = wire.final_report(sequence + 2)
    finally:
        proxy.heal()
    assert stalled.state == "failed" and "no response within" in stalled.reason
    assert served_version(agent) == serving

