"""The systemd units: ``systemd-analyze verify`` accepts them, and what they run exists in the wheel."""

import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.firmware_images.builds import FIRMWARE, REPO
from tests.firmware_images.unit_supervisor import UnitFile

UNITS = ("edgefleet-agent.service", "edgefleet-agent-firstboot.service")
HOST_UNITS = next((path for path in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
                   if (path / "sysinit.target").exists()), None)


def fake_root(root: Path, executables: tuple[str, ...]) -> Path:
    """A file system root with the host's system units and an install of the agent's commands."""
    assert HOST_UNITS is not None, "systemd is not installed (scripts/lib.sh installs it)"
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    slot = root / "opt/edgefleet-agent/slots/a/bin"
    slot.mkdir(parents=True)
    for name in executables:
        (slot / name).write_text("#!/bin/sh\n")
        (slot / name).chmod(0o755)
    for link in ("current", "confirmed"):
        (root / "opt/edgefleet-agent" / link).symlink_to("slots/a")
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(FIRMWARE / "systemd" / unit, units / unit)
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units], capture_output=True, text=True,
                          timeout=60, cwd=root)


def console_scripts() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    root = fake_root(tmp_path / "root", ("edgefleet-agent", "edgefleet-agent-guard", "edgefleet-agent-firstboot"))
    result = verify(root, *UNITS)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


def test_verify_catches_a_missing_command(tmp_path: Path) -> None:
    root = fake_root(tmp_path / "root", ("edgefleet-agent", "edgefleet-agent-firstboot"))
    result = verify(root, "edgefleet-agent.service")
    assert result.returncode != 0 and "edgefleet-agent-guard" in result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_unit_commands_are_console_scripts_of_the_wheel(unit: str) -> None:
    argv = shlex.split(UnitFile.read(FIRMWARE / "systemd" / unit).value("Service", "ExecStart"))
    commands = {Path(arg).name for arg in argv if arg.startswith("/opt/edgefleet-agent/")}
    assert commands and commands <= console_scripts()
    assert argv[0].startswith("/opt/edgefleet-agent/confirmed/bin/")  # starters come from the confirmed slot


def test_agent_unit_restarts_into_a_new_slot_and_is_hardened() -> None:
    unit = UnitFile.read(FIRMWARE / "systemd" / "edgefleet-agent.service")
    service = {key: values[-1] for key, values in unit.sections["Service"].items()}
    assert service["Type"] == "notify" and service["NotifyAccess"] == "all" and "WatchdogSec" in service
    assert service["Restart"] == "on-failure" and service["RestartForceExitStatus"] == "75"
    assert "/opt/edgefleet-agent/current/bin/edgefleet-agent" in service["ExecStart"]
    assert service["User"] == "edgefleet" and service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes" and service["ReadWritePaths"] == "/opt/edgefleet-agent"


@pytest.mark.parametrize(("unit", "threshold"), [(UNITS[0], 25), (UNITS[1], 35)])
def test_units_stay_hardened(unit: str, threshold: int, tmp_path: Path) -> None:
    """systemd's own exposure score (0-100; 18 and 27 when written) must not creep up."""
    unit_file = FIRMWARE / "systemd" / unit
    argv = ["systemd-analyze", "security", "--offline=yes", f"--threshold={threshold}", str(unit_file)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Overall exposure level" in result.stdout
