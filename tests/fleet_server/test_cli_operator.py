"""The operator CLI's server commands through typer's CliRunner, against a real
server (uvicorn in a thread, real HTTP on loopback): tables, --json, exit codes
(0 ok, 1 refused, 2 usage, 3 unreachable), one-line errors with hints, and the
server/token resolution (flags, environment, login config file)."""

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from typer.testing import CliRunner

from fleet_server.app import create_app
from fleet_server.cli import app
from fleet_server.cli_context import save_config
from fleet_server.processes import free_port
from tests.fleet_server.conftest import ADMIN_TOKEN, BOOTSTRAP_TOKEN, ONNX_FIXTURE, build_onnx_model, make_settings

LINEAGE = {"description": "cli test model", "lineage": {"training_data_uri": "s3://bucket/digits.csv",
                                                        "metrics": {"accuracy": 0.96}}}


class LiveServer:
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(make_settings(data_dir))
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="cli-test-server", daemon=True)

    def start(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("cli-server")
    server = LiveServer(directory / "data").start()
    import httpx

    with httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        for index in range(3):
            body = {"device_id": f"cli-{index}", "bootstrap_token": BOOTSTRAP_TOKEN, "arch": "aarch64",
                    "ram_mb": 1024, "runtimes": ["onnxruntime"], "tags": ["cli"] + (["odd"] if index % 2 else [])}
            assert http.post("/devices/enroll", json=body).status_code == 201
        model = build_onnx_model(directory / "model.onnx")
        with open(model, "rb") as handle:
            upload = http.post("/models", files={"file": ("model.onnx", handle)},
                               data={"name": "cli-model", "metadata": json.dumps(LINEAGE)})
        assert upload.status_code == 201, upload.text
        assert http.post("/releases", json={"model": "cli-model", "version": 1}).status_code == 201
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cli(live: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``cli(*args, token=ADMIN_TOKEN, server=live.url)`` runs ``edgefleet ARGS`` with a private config file."""
    for name in ("EDGEFLEET_SERVER", "EDGEFLEET_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EDGEFLEET_CONFIG", str(tmp_path / "cli.json"))
    runner = CliRunner()

    def run(*args: str, token: str | None = ADMIN_TOKEN, server: str | bool | None = None, input: str | None = None):
        options = [*(["--server", server or live.url] if server is not False else []),
                   *(["--token", token] if token else [])]
        return runner.invoke(app, [*args, *options], input=input)

    return run


def test_device_list_table_json_and_filters(cli) -> None:
    table = cli("device", "list", "--tag", "cli")
    assert table.exit_code == 0, table.output
    assert all(f"cli-{index}" in table.output for index in range(3)) and "offline" in table.output
    data = json.loads(cli("device", "list", "--tag", "odd", "--json").output)
    assert data["total"] == 1 and [d["device_id"] for d in data["devices"]] == ["cli-1"]
    page = cli("device", "list", "--tag", "cli", "--limit", "2")
    assert "1-2 of 3 devices; next page: --offset 2" in page.output
    assert json.loads(cli("device", "list", "--online", "--json").output)["total"] == 0
    assert "no devices match" in cli("device", "list", "--model", "cli-model:1").output


def test_device_show_and_tag(cli) -> None:
    shown = cli("device", "show", "cli-0")
    assert shown.exit_code == 0 and "aarch64, 1024 MB RAM" in shown.output and "offline" in shown.output
    assert json.loads(cli("device", "show", "cli-0", "--json").output)["tags"] == ["cli"]
    tagged = cli("device", "tag", "cli-0", "--add", "eu", "-a", "line-2", "--remove", "cli")
    assert tagged.exit_code == 0 and "tags eu, line-2" in tagged.output
    assert json.loads(cli("device", "tag", "cli-0", "-r", "eu", "--json").output)["tags"] == ["line-2"]
    nothing = cli("device", "tag", "cli-0")
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output and "hint:" in nothing.output
    bad = cli("device", "tag", "cli-0", "--add", "has space")
    assert bad.exit_code == 1 and "invalid tag" in bad.output
    cli("device", "tag", "cli-0", "--add", "cli")


def test_device_revoke_asks_and_then_refuses_the_device(cli) -> None:
    declined = cli("device", "revoke", "cli-2", input="n\n")
    assert declined.exit_code == 1
    assert json.loads(cli("device", "list", "--tag", "cli", "--json").output)["total"] == 3
    revoked = cli("device", "revoke", "cli-2", "--reason", "stolen", "--yes", "--json")
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(revoked.output)["reason"] == "stolen"
    missing = cli("device", "revoke", "nobody", "--yes")
    assert missing.exit_code == 1 and "hint: check the name or id" in missing.output


def test_model_and_release_commands(cli) -> None:
    models = cli("model", "list")
    assert models.exit_code == 0 and "cli-model" in models.output
    versions = cli("model", "show", "cli-model")
    assert "versions" in versions.output and "onnx" in versions.output
    detail = json.loads(cli("model", "show", "cli-model", "--version", "1", "--json").output)
    assert detail["lineage"]["training_data_uri"] == "s3://bucket/digits.csv" and detail["released"] is True
    text = cli("model", "show", "cli-model", "-v", "1").output
    assert "s3://bucket/digits.csv" in text and "accuracy=0.96" in text
    releases = json.loads(cli("release", "list", "--model", "cli-model", "--json").output)
    assert [(r["name"], r["version"]) for r in releases] == [("cli-model", 1)]
    release = cli("release", "show", "cli-model", "1")
    assert release.exit_code == 0 and "onnx-fp32" in release.output and "signatures" in release.output
    envelope = json.loads(cli("release", "show", "cli-model", "1", "--json").output)["envelope"]
    assert envelope["signed"]["name"] == "cli-model"
    missing = cli("model", "show", "nope")
    assert missing.exit_code == 1 and "not found" in missing.output


def test_exit_codes_and_one_line_errors(cli) -> None:
    bad_token = cli("device", "list", token="wrong")
    assert bad_token.exit_code == 1
    assert bad_token.output.splitlines()[0].startswith("error: ") and "hint: check the token" in bad_token.output
    down = cli("device", "list", server=f"http://127.0.0.1:{free_port()}")
    assert down.exit_code == 3 and "cannot reach the fleet server" in down.output and "is the server running" in \
        down.output
    no_token = cli("device", "list", token=None)
    assert no_token.exit_code == 2 and "no API token" in no_token.output and "edgefleet login" in no_token.output
    bad_url = cli("device", "list", server="ftp://example")
    assert bad_url.exit_code == 2 and "invalid server URL" in bad_url.output
    usage = cli("release", "show", "cli-model")
    assert usage.exit_code == 2
    for result in (bad_token, down, no_token, bad_url):
        assert "Traceback" not in result.output and len(result.output.splitlines()) == 2


def test_server_and_token_come_from_the_login_config(cli, live: LiveServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    save_config(live.url, ADMIN_TOKEN)
    config = tmp_path / "cli.json"
    assert config.stat().st_mode & 0o777 == 0o600
    assert cli("device", "list", "--json", server=False, token=None).exit_code == 0
    monkeypatch.setenv("EDGEFLEET_TOKEN", "from-the-environment")  # the environment wins over the file
    assert cli("device", "list", server=False, token=None).exit_code == 1
    assert cli("device", "list", server=False, token=ADMIN_TOKEN).exit_code == 0  # and the flag over both
    monkeypatch.delenv("EDGEFLEET_TOKEN")
    config.write_text("{not json", encoding="utf-8")
    broken = cli("device", "list", server=False, token=None)
    assert broken.exit_code == 2 and "cannot read the CLI config" in broken.output


def test_deployment_commands(cli) -> None:
    created = cli("deployment", "create", "cli-model:1", "--tag", "odd", "--json")
    assert created.exit_code == 0, created.output
    deployment = json.loads(created.output)
    assert [t["device_id"] for t in deployment["targets"]] == ["cli-1"]
    listed = json.loads(cli("deployment", "list", "--json").output)
    assert listed[0]["id"] == deployment["id"] and listed[0]["states"] == {"pending": 1}
    shown = cli("deployment", "show", str(deployment["id"]))
    assert shown.exit_code == 0 and "cli-1" in shown.output and "pending" in shown.output
    waited = cli("deployment", "create", "cli-model:1", "--device", "cli-0", "--wait", "--timeout", "1")
    assert waited.exit_code == 1 and "not finished after 1s" in waited.output and "hint:" in waited.output
    assert cli("deployment", "create", "cli-model", "--tag", "cli").exit_code == 2
    nobody = cli("deployment", "create", "cli-model:1")
    assert nobody.exit_code == 2 and "no devices selected" in nobody.output
    unknown = cli("deployment", "create", "cli-model:9", "--tag", "cli")
    assert unknown.exit_code == 1 and "not found" in unknown.output


def test_model_upload_registers_lineage_and_builds_the_reference_profile(cli, tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.npy"
    np.save(calibration, np.random.default_rng(3).normal(size=(200, 64)).astype(np.float32))
    uploaded = cli("model", "upload", str(ONNX_FIXTURE), "--name", "cli-uploaded", "--calibration", str(calibration),
                   "--description", "digits, retrained", "--training-data", "s3://bucket/digits-2.csv",
                   "--metric", "accuracy=0.97", "--metric", "f1=0.95", "--parent-version", "1")
    assert uploaded.exit_code == 0, uploaded.output
    assert "uploaded cli-uploaded v1" in uploaded.output and "reference profile " in uploaded.output
    detail = json.loads(cli("model", "show", "cli-uploaded", "--version", "1", "--json").output)
    assert detail["description"] == "digits, retrained"
    assert detail["lineage"]["metrics"] == {"accuracy": 0.97, "f1": 0.95}
    assert detail["lineage"]["training_data_uri"] == "s3://bucket/digits-2.csv"
    assert detail["lineage"]["parent_version"] == 1
    assert len(detail["reference_profile_sha256"]) == 64

    plain = json.loads(cli("model", "upload", str(ONNX_FIXTURE), "--name", "cli-uploaded", "--json").output)
    assert plain["version"] == 2 and plain["reference_profile_sha256"] is None


def test_model_upload_errors_are_one_line_and_register_nothing(cli, tmp_path: Path) -> None:
    bad_metric = cli("model", "upload", str(ONNX_FIXTURE), "--name", "cli-refused", "--metric", "accuracy")
    assert bad_metric.exit_code == 2 and "is not NAME=NUMBER" in bad_metric.output
    wrong_shape = tmp_path / "calibration.npy"
    np.save(wrong_shape, np.zeros((10, 3), dtype=np.float32))
    refused = cli("model", "upload", str(ONNX_FIXTURE), "--name", "cli-refused", "--calibration", str(wrong_shape))
    assert refused.exit_code == 1 and refused.output.startswith("error: ") and "Traceback" not in refused.output
    assert cli("model", "show", "cli-refused").exit_code == 1  # nothing was registered
