"""Agent self-update end to end: a real server and Mosquitto, an agent installed in A/B slots (real
virtual environments), and the service unit's own command line run under a supervisor that does what
systemd does (Restart=on-failure, NOTIFY_SOCKET, watchdog).

One device gets, in order: a good agent release (it installs into the other slot, restarts into it,
confirms and reports the new version), a broken one that crashes at start (the guard counts the
starts and brings the good slot back without anyone's help) and a silent one that starts but never
connects (the guard gives up at the report deadline). The server sees every outcome.
"""

import json
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.selfupdate.layout import CONFIRMED, CURRENT, InstallLayout
from fleet_server.client import FleetClient
from fleet_server.localfleet import LocalServer
from tests.firmware_images.builds import FIRMWARE, make_layout, run
from tests.firmware_images.unit_supervisor import ServiceSupervisor
from tests.helpers.wheels import rebuild_wheel

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first test builds the wheel and slot a

DEVICE = "fw-update-1"
REPORT_TIMEOUT_S = 10
MAX_STARTS = 2
EDGEFLEET = Path(sys.executable).parent / "edgefleet"


@dataclass
class Fleet:
    server: LocalServer
    client: FleetClient
    layout: InstallLayout
    supervisor: ServiceSupervisor
    base_wheel: Path
    workdir: Path

    def device(self) -> dict:
        return self.client.device(DEVICE)

    def wait_for_agent(self, version: str, timeout: float = 120) -> None:
        self.supervisor.wait_for(lambda: (d := self.device())["online"] and d["agent_version"] == version,
                                 timeout, f"{DEVICE} online with agent {version}")


@pytest.fixture(scope="module")
def fleet(mosquitto, tmp_path_factory: pytest.TempPathFactory, agent_wheel: Path,
          agent_wheelhouse: Path) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("selfupdate")
    base_wheel = agent_wheel
    layout = InstallLayout(make_layout(workdir / "opt", base_wheel, agent_wheelhouse))
    server = LocalServer(workdir / "server", bootstrap_token=secrets.token_urlsafe(16),
                         admin_token=secrets.token_urlsafe(24), mqtt_url=mosquitto.url)
    config = workdir / "agent.toml"
    config.write_text(f'data_dir = "{workdir / "data"}"\ninference_port = 0\nheartbeat_interval_s = 2\n'
                      f"self_update_report_timeout_s = {REPORT_TIMEOUT_S}\nself_update_max_starts = {MAX_STARTS}\n")
    supervisor = ServiceSupervisor(FIRMWARE / "systemd" / "edgefleet-agent.service",
                                   {"/opt/edgefleet-agent": str(layout.root), "/etc/edgefleet/agent.toml": str(config)},
                                   dict(os.environ), workdir / "agent.log")
    server.start()
    try:
        run([str(layout.root / "current" / "bin" / "edgefleet-agent"), "--config", str(config), "enroll",
             "--server", server.url, f"--token={server.bootstrap_token}", "--device-id", DEVICE])
        with FleetClient(server.url, server.admin_token) as client:
            supervisor.start()
            try:
                yield Fleet(server, client, layout, supervisor, base_wheel, workdir)
            finally:
                supervisor.stop()
    finally:
        server.stop()


def deploy(fleet: Fleet, wheel: Path) -> dict:
    """Upload, sign and deploy ``wheel`` to the device through the API; the finished deployment."""
    version = fleet.client.upload_model(wheel, "edgefleet-agent", precision="py3")["version"]
    fleet.client.create_release("edgefleet-agent", version)
    deployment = fleet.client.deploy("edgefleet-agent", version, device_ids=[DEVICE])
    return fleet.client.wait_for_deployment(deployment["id"], timeout=240)


def test_the_installed_agent_runs_under_the_unit_and_reports(fleet: Fleet) -> None:
    fleet.wait_for_agent("0.1.0")
    assert "agent" in fleet.device()["runtimes"]  # installed A/B, it can take agent releases
    fleet.supervisor.wait_for(lambda: fleet.supervisor.messages("WATCHDOG=1"), 60, "a watchdog ping")
    assert fleet.supervisor.messages("READY=1") == [1]
    assert fleet.supervisor.exits == []


def test_a_good_update_switches_slots_and_reports_the_new_version(fleet: Fleet) -> None:
    good = rebuild_wheel(fleet.base_wheel, fleet.workdir / "good", "0.1.0+good")
    result = run([str(EDGEFLEET), "agent", "push", str(good), "--device", DEVICE, "--wait", "240", "--json",
                  "--server", fleet.server.url, "--token", fleet.server.admin_token])
    pushed = json.loads(result.stdout)
    assert pushed["agent_version"] == "0.1.0+good"
    assert [v["runtime"] for v in pushed["release"]["variants"]] == ["agent"]
    (target,) = pushed["deployment"]["targets"]
    assert target["state"] == "succeeded", target
    fleet.wait_for_agent("0.1.0+good")
    layout = fleet.layout
    assert (layout.target(CURRENT), layout.target(CONFIRMED)) == ("b", "b")
    assert layout.read_trial() is None and layout.read_result().outcome == "confirmed"
    assert 75 in fleet.supervisor.exits  # the old agent asked to be started again
    assert len(fleet.supervisor.messages("READY=1")) >= 2  # the new agent told the supervisor it runs


def test_an_agent_that_crashes_at_start_is_rolled_back_by_the_guard(fleet: Fleet) -> None:
    def crash_on_run(name: str, data: bytes) -> bytes:
        return b'raise RuntimeError("this agent build is broken")\n' + data if name == "agent/daemon.py" else data

    broken = rebuild_wheel(fleet.base_wheel, fleet.workdir / "broken", "0.1.0+broken", crash_on_run)
    exits_before = len(fleet.supervisor.exits)
    (target,) = deploy(fleet, broken)["targets"]
    assert target["state"] == "rolled_back", target
    assert f"started {MAX_STARTS} times" in target["reason"] and "0.1.0+broken" in target["reason"]
    fleet.wait_for_agent("0.1.0+good")
    assert (fleet.layout.target(CURRENT), fleet.layout.target(CONFIRMED)) == ("b", "b")
    crashes = [code for code in fleet.supervisor.exits[exits_before:] if code not in (0, 75)]
    assert len(crashes) == MAX_STARTS  # each failed start went through Restart=on-failure


def test_an_agent_that_never_reports_is_rolled_back_at_the_deadline(fleet: Fleet) -> None:
    def never_connect(name: str, data: bytes) -> bytes:
        if name != "agent/mqtt_link.py":
            return data
        start = b"    def start(self) -> None:\n"
        assert data.count(start) == 1
        return data.replace(start, start + b"        return  # this build never connects\n")

    silent = rebuild_wheel(fleet.base_wheel, fleet.workdir / "silent", "0.1.0+silent", never_connect)
    (target,) = deploy(fleet, silent)["targets"]
    assert target["state"] == "rolled_back", target
    assert f"within {REPORT_TIMEOUT_S} s" in target["reason"]
    fleet.wait_for_agent("0.1.0+good")
    assert (fleet.layout.target(CURRENT), fleet.layout.target(CONFIRMED)) == ("b", "b")
    assert fleet.layout.read_result().outcome == "rolled_back"

