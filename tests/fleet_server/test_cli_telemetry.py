"""``edgefleet telemetry show`` and ``edgefleet alerts list|show`` against a live server."""

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from fleet_server.cli import app
from fleet_server.models.device import Device
from fleet_server.services.telemetry_store import TelemetryStore
from tests.fleet_server.conftest import ADMIN_TOKEN, BOOTSTRAP_TOKEN
from tests.fleet_server.telemetry_helpers import make_window
from tests.fleet_server.test_cli_operator import LiveServer


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("cli-telemetry") / "data").start()
    with httpx.Client(base_url=f"{server.url}/api/v1") as http:
        for device_id, tags in (("tele-cli-1", ["north"]), ("tele-cli-2", ["south"])):
            body = {"device_id": device_id, "bootstrap_token": BOOTSTRAP_TOKEN, "arch": "aarch64", "ram_mb": 512,
                    "runtimes": ["onnxruntime"], "tags": tags}
            assert http.post("/devices/enroll", json=body).status_code == 201
    runtime = server.app.state.runtime
    now = time.time()
    TelemetryStore(runtime.engine).store([make_window("tele-cli-1", 1, now - 120, errors=30),
                                          make_window("tele-cli-2", 1, now - 60)])
    with Session(runtime.engine) as session:
        device = session.get(Device, "tele-cli-2")
        assert device is not None
        device.last_seen = datetime.now(UTC) - timedelta(hours=2)
        session.add(device)
        session.commit()
    runtime.monitor.run_once()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cli(live: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EDGEFLEET_CONFIG", str(tmp_path / "cli.json"))
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [*args, "--server", live.url, "--token", ADMIN_TOKEN])


def test_telemetry_show_for_a_device_and_a_model(cli) -> None:
    device = cli("telemetry", "show", "tele-cli-1", "--bucket", "3600")
    assert device.exit_code == 0, device.output
    assert "device tele-cli-1" in device.output and "10.00%" in device.output
    data = json.loads(cli("telemetry", "show", "tele-model", "--json", "--bucket", "3600").output)
    assert data["scope"] == "model" and sum(p["requests"] for p in data["points"]) == 600
    cohort = json.loads(cli("telemetry", "show", "tele-model:1", "--tag", "south", "--json").output)
    assert sum(p["requests"] for p in cohort["points"]) == 300 and cohort["model_version"] == 1
    assert cli("telemetry", "show", "tele-model:x").exit_code == 2


def test_alerts_list_and_show(cli) -> None:
    listing = cli("alerts", "list", "--state", "firing")
    assert listing.exit_code == 0, listing.output
    assert "error_rate" in listing.output and "offline" in listing.output
    alerts = json.loads(cli("alerts", "list", "--kind", "offline", "--json").output)
    assert [a["subject"] for a in alerts] == ["tele-cli-2"]
    shown = cli("alerts", "show", str(alerts[0]["id"]))
    assert shown.exit_code == 0 and "no heartbeat" in shown.output
    missing = cli("alerts", "show", "99999")
    assert missing.exit_code == 1 and "not found" in missing.output
