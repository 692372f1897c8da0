"""The security commands against the running server: login, tokens, bootstrap
tokens, audit export and verification (offline too), and a release signed
offline with ``edgefleet release sign`` (no server contact) then submitted."""

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet_server.cli import app
from tests.integration.conftest import MODELS, unique_model
from tests.integration.security.secure_fleet import SecureFleet

pytestmark = pytest.mark.slow


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EDGEFLEET_CONFIG", str(tmp_path / "cli.json"))
    for variable in ("EDGEFLEET_SERVER", "EDGEFLEET_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, f"{args}: {result.output}"
        return result.output

    return run


def test_login_tokens_and_roles_from_the_command_line(fleet: SecureFleet, cli, tmp_path: Path) -> None:
    assert "logged in" in cli("login", "--server", fleet.server.url, "--token", fleet.server.admin_token)
    config = tmp_path / "cli.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["server"] == fleet.server.url
    issued = json.loads(cli("token", "create", "cli-viewer", "--role", "viewer", "--json"))
    assert issued["role"] == "viewer" and issued["token"].startswith("efo_")
    listed = cli("token", "list", "--json")
    assert "cli-viewer" in listed and issued["token"] not in listed
    refused = cli("token", "create", "escalate", "--role", "admin", "--token", issued["token"], code=1)
    assert "403" in refused and "higher role" in refused
    json.loads(cli("device", "list", "--token", issued["token"], "--json"))  # a viewer may read
    cli("token", "revoke", str(issued["id"]))
    assert "401" in cli("device", "list", "--token", issued["token"], code=1)
    bootstrap = json.loads(cli("device", "token", "create", "--device-id", "cli-dev", "--ttl", "10m", "--json"))
    assert bootstrap["device_id"] == "cli-dev" and bootstrap["used_at"] is None
    assert "invalid duration" in cli("device", "token", "create", "--ttl", "soon", code=2)


def test_audit_export_verifies_offline_and_an_edit_is_caught(fleet: SecureFleet, cli, tmp_path: Path) -> None:
    cli("login", "--server", fleet.server.url, "--token", fleet.server.admin_token)
    for name in ("audit-a", "audit-b"):  # entries of its own, whichever tests ran before
        cli("token", "create", name, "--role", "viewer", "--json")
    assert "audit trail intact" in cli("audit", "verify")
    export = tmp_path / "audit.jsonl"
    cli("audit", "export", "--out", str(export))
    assert "audit trail intact" in cli("audit", "verify", "--file", str(export))
    lines = export.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["actor"] = "someone-else"
    lines[1] = json.dumps(edited)
    export.write_text("\n".join(lines) + "\n")
    assert "entry 2 was altered" in cli("audit", "verify", "--file", str(export), code=1)
    del lines[1]
    export.write_text("\n".join(lines) + "\n")
    assert "entry 2 is missing" in cli("audit", "verify", "--file", str(export), code=1)
    assert "NOT intact" in cli("audit", "verify", "--expect-head", "0" * 64, code=1)


def test_a_release_is_signed_offline_and_accepted(fleet: SecureFleet, cli, tmp_path: Path) -> None:
    cli("login", "--server", fleet.server.url, "--token", fleet.server.admin_token)
    with fleet.admin() as admin:
        version = admin.upload_model(unique_model(MODELS / "digits_mlp.onnx", tmp_path, "offline"),
                                     "digits-offline")["version"]
    request = tmp_path / "request.json"
    cli("release", "request", "digits-offline", str(version), "--out", str(request))
    offline = tmp_path / "offline-machine"  # only release.pem and root.json travel there
    offline.mkdir()
    for name in ("release.pem", "root.json"):
        (offline / name).write_bytes((fleet.key_dir / name).read_bytes())
    signed = tmp_path / "signed.json"
    output = cli("release", "sign", str(request), "--key", str(offline / "release.pem"), "--root",
                 str(offline / "root.json"), "--out", str(signed))
    assert "1 signature" in output
    wrong_key = cli("release", "sign", str(request), "--key", str(fleet.key_dir / "rollout.pem"), "--root",
                    str(offline / "root.json"), code=1)
    assert "not a release key" in wrong_key
    accepted = json.loads(cli("release", "submit", str(signed), "--json"))
    assert accepted["version"] == version and accepted["envelope"] == json.loads(signed.read_text())
