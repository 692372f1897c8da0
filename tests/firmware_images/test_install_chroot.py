"""install.sh for real, in a Debian bookworm root file system (debootstrap): the layout it leaves, the
units against that root (systemd-analyze verify), first-boot enrollment from the boot partition, and
the agent started by the unit's command line as the edgefleet user, reporting to a test server.

amd64 here (the host's architecture): this machine has no binfmt_misc for qemu-user, so an arm64
root could not run its programs. The chroot shares the host's network, so the server listens on
127.0.0.1 as in every other test.
"""

import os
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_server.client import FleetClient
from fleet_server.localfleet import LocalServer
from tests.firmware_images.builds import FIRMWARE
from tests.firmware_images.chroot import CLEAN_ENV, account, cached_rootfs, debian_arch, inside, unpack
from tests.firmware_images.unit_supervisor import ServiceSupervisor, UnitFile

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # the first run debootstraps (a few minutes)

DEVICE = "fw-chroot-1"
STAGE = "/tmp/edgefleet-install"
UNITS = ("edgefleet-agent.service", "edgefleet-agent-firstboot.service")


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("debootstrap, chroot and mounting /proc need root (CI runs as root)")
    return unpack(cached_rootfs(debian_arch()), tmp_path_factory.mktemp("bookworm") / "root")


@pytest.fixture(scope="module")
def server(mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = LocalServer(tmp_path_factory.mktemp("server"), bootstrap_token=secrets.token_urlsafe(16),
                         admin_token=secrets.token_urlsafe(24), mqtt_url=mosquitto.url)
    server.start()
    yield server
    server.stop()


def run_inside(root: Path, argv: list[str], user: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(inside(root, argv, user), env={**CLEAN_ENV, "HOME": "/root", **env},
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{shlex.join(argv)} exited {result.returncode}:\n{result.stdout[-4000:]}\n" \
                                   f"{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def installed(rootfs: Path, server: LocalServer, agent_wheel: Path, agent_wheelhouse: Path) -> Path:
    stage = rootfs / STAGE.lstrip("/")
    shutil.copytree(FIRMWARE, stage / "firmware_images")
    shutil.copytree(agent_wheelhouse, stage / "wheelhouse")
    shutil.copy(agent_wheel, stage)
    shutil.copy(server.data_dir / "keys" / "root.json", stage / "root.json")
    run_inside(rootfs, ["bash", f"{STAGE}/firmware_images/install.sh", "--wheel", f"{STAGE}/{agent_wheel.name}",
                        "--find-links", f"{STAGE}/wheelhouse", "--no-index", "--root-json", f"{STAGE}/root.json"],
               PIP_COMPILE="0")  # pip writes no .pyc files: the same install, less CPU in CI
    return rootfs


@pytest.fixture(scope="module")
def enrolled(installed: Path, server: LocalServer) -> tuple[Path, str]:
    """First boot: edgefleet.toml on the boot partition, the first-boot unit's command line run as root."""
    boot = installed / "boot" / "firmware"
    boot.mkdir(parents=True, exist_ok=True)
    (boot / "edgefleet.toml").write_text(
        f'# written after flashing\nserver_url = "{server.url}"\nbootstrap_token = "{server.bootstrap_token}"\n'
        f'tags = ["chroot", "bookworm"]\ndevice_id = "{DEVICE}"\n')
    command = shlex.split(UnitFile.read(FIRMWARE / "systemd" / UNITS[1]).value("Service", "ExecStart"))
    run_inside(installed, command)
    return installed, (boot / "edgefleet.toml").read_text()


def test_install_sh_lays_out_the_slots_user_config_and_units(installed: Path, server: LocalServer) -> None:
    prefix = installed / "opt" / "edgefleet-agent"
    assert os.readlink(prefix / "current") == os.readlink(prefix / "confirmed") == "slots/a"
    assert '"extras": "agent"' in (prefix / "install.json").read_text()
    uid, gid = account(installed, "edgefleet")
    data = installed / "var" / "lib" / "edgefleet-agent"
    assert (data.stat().st_uid, data.stat().st_mode & 0o777) == (uid, 0o750)
    assert (data / "root.json").read_bytes() == (server.data_dir / "keys" / "root.json").read_bytes()
    assert (installed / "etc" / "edgefleet" / "agent.toml").is_file()
    for unit in UNITS:
        assert (installed / "etc/systemd/system/multi-user.target.wants" / unit).is_symlink()
    version = run_inside(installed, ["/opt/edgefleet-agent/current/bin/edgefleet-agent", "--version"], f"{uid}:{gid}")
    assert version.stdout.strip() == "edgefleet-agent 0.1.0"


def test_installed_units_pass_systemd_analyze_verify_against_the_image(installed: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", f"--root={installed}", *UNITS], capture_output=True,
                            text=True, timeout=120, cwd=installed)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


def test_first_boot_enrolls_from_the_boot_partition_and_forgets_the_token(enrolled: tuple[Path, str],
                                                                          server: LocalServer) -> None:
    root, boot_file = enrolled
    assert "bootstrap_token" not in boot_file and server.bootstrap_token not in boot_file
    assert boot_file.startswith("# written after flashing\n") and f'device_id = "{DEVICE}"' in boot_file
    enrollment = root / "var" / "lib" / "edgefleet-agent" / "enrollment.json"
    assert enrollment.stat().st_uid == account(root, "edgefleet")[0] and enrollment.stat().st_mode & 0o077 == 0
    with FleetClient(server.url, server.admin_token) as client:
        device = client.device(DEVICE)
    assert sorted(device["tags"]) == ["bookworm", "chroot"] and "agent" in device["runtimes"]


def test_the_agent_unit_runs_as_edgefleet_and_reports_to_the_server(enrolled: tuple[Path, str],
                                                                   server: LocalServer, tmp_path: Path) -> None:
    root, _ = enrolled
    config = root / "etc" / "edgefleet" / "agent.toml"  # port 8080 may be taken on a shared test machine
    config.write_text(config.read_text().replace("inference_port = 8080", "inference_port = 0")
                      + "heartbeat_interval_s = 2\n")
    uid, gid = account(root, "edgefleet")
    env = {**CLEAN_ENV, "HOME": "/var/lib/edgefleet-agent"}
    supervisor = ServiceSupervisor(FIRMWARE / "systemd" / UNITS[0], {}, env, tmp_path / "agent.log",
                                   wrap=lambda argv: inside(root, argv, f"{uid}:{gid}"), service_root=root)
    with FleetClient(server.url, server.admin_token) as client:
        supervisor.start()
        try:
            supervisor.wait_for(lambda: (d := client.device(DEVICE))["online"] and d["agent_version"] == "0.1.0",
                                120, f"{DEVICE} online")
            supervisor.wait_for(lambda: supervisor.messages("READY=1"), 30, "READY=1 from the agent")
            assert supervisor.exits == []
        finally:
            supervisor.stop()
        supervisor.wait_for(lambda: not client.device(DEVICE)["online"], 30, f"{DEVICE} offline after the stop")
