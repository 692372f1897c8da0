"""Installing an agent wheel into the other slot, offline, with real virtual environments and pip."""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import SelfUpdateError
from agent.selfupdate.bundle import inspect_wheel
from agent.selfupdate.installer import clone_tree, install_wheel, own_entries, site_packages
from tests.helpers.wheels import make_wheel

PYTHON = getattr(sys, "_base_executable", sys.executable)


def agent_wheel(directory: Path, version: str, prints: str | None = None, requires: tuple[str, ...] = ()) -> Path:
    """A stand-in agent whose ``edgefleet-agent --version`` prints ``prints`` (default: its version)."""
    cli = f'def main():\n    print("edgefleet-agent {prints or version}")\n    return 0\n'
    return make_wheel(directory, version, extra={"agent/cli.py": cli.encode()}, requires=requires)


@pytest.fixture(scope="module")
def running_slot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slot like install.sh makes: a venv with pip, a dependency, and edgefleet 1.0 installed."""
    base = tmp_path_factory.mktemp("running")
    slot = base / "slots" / "a"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(slot)], check=True, timeout=300)
    packages = site_packages(slot)
    pip = importlib.metadata.distribution("pip")  # this interpreter's pip, linked in (ensurepip is slow)
    for entry in {"pip", Path(str(pip._path)).name}:  # type: ignore[attr-defined]
        clone_tree(Path(str(pip.locate_file(entry))), packages / entry, set())
    (packages / "fakedep").mkdir()
    (packages / "fakedep" / "__init__.py").write_text("VALUE = 1\n")
    (packages / "fakedep-1.0.dist-info").mkdir()
    (packages / "fakedep-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: fakedep\nVersion: 1.0\n")
    (packages / "fakedep-1.0.dist-info" / "RECORD").write_text("fakedep/__init__.py,,\n")
    subprocess.run([str(slot / "bin" / "python"), "-m", "pip", "install", "--no-index", "--quiet",
                    str(agent_wheel(base, "1.0"))], check=True, timeout=300,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return slot


def test_clone_tree_hard_links_files_and_skips_top_level_entries(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    (source / "pkg" / "sub").mkdir(parents=True)
    (source / "pkg" / "sub" / "mod.py").write_text("x = 1\n")
    (source / "skipme").mkdir()
    (source / "skipme" / "f").write_text("no")
    (source / "top.pth").write_text("/somewhere\n")
    (source / "link").symlink_to("pkg")
    assert clone_tree(source, target, {"skipme", "top.pth"}) == 1
    assert (target / "pkg" / "sub" / "mod.py").stat().st_ino == (source / "pkg" / "sub" / "mod.py").stat().st_ino
    assert not (target / "skipme").exists() and not (target / "top.pth").exists()
    assert os.readlink(target / "link") == "pkg"


def test_own_entries_are_the_top_level_names_of_the_distribution(tmp_path: Path) -> None:
    info = tmp_path / "edgefleet-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgefleet\nVersion: 1.0\n")
    (info / "RECORD").write_text("agent/__init__.py,,\nfleet_server/cli.py,,\n__editable__.edgefleet-1.0.pth,,\n"
                                 "../../../bin/edgefleet-agent,,\n")
    other = tmp_path / "numpy-2.0.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: numpy\nVersion: 2.0\n")
    (other / "RECORD").write_text("numpy/__init__.py,,\n")
    assert own_entries(tmp_path) == {"agent", "fleet_server", "__editable__.edgefleet-1.0.pth",
                                     "edgefleet-1.0.dist-info"}


def test_install_builds_the_other_slot_from_the_running_one(running_slot: Path, tmp_path: Path) -> None:
    wheel = agent_wheel(tmp_path, "2.0")
    target = running_slot.parent / "b"
    install_wheel(PYTHON, running_slot, target, wheel, inspect_wheel(wheel), "")
    version = subprocess.run([str(target / "bin" / "edgefleet-agent"), "--version"], capture_output=True, text=True,
                             check=True, timeout=60)
    assert version.stdout.strip() == "edgefleet-agent 2.0"
    source, built = site_packages(running_slot), site_packages(target)
    assert (built / "fakedep" / "__init__.py").stat().st_ino == (source / "fakedep" / "__init__.py").stat().st_ino
    assert '"2.0"' in (built / "agent" / "__init__.py").read_text()  # the new agent, not the running one's
    assert '"1.0"' in (source / "agent" / "__init__.py").read_text()  # the running slot is untouched
    assert not (built / "edgefleet-1.0.dist-info").exists()


def test_a_missing_dependency_fails_before_anything_switches(running_slot: Path, tmp_path: Path) -> None:
    wheel = agent_wheel(tmp_path, "3.0", requires=("edgefleet-test-missing-dependency>=1",))
    with pytest.raises(SelfUpdateError, match="pip install of the agent bundle failed.*missing-dependency"):
        install_wheel(PYTHON, running_slot, running_slot.parent / "b", wheel, inspect_wheel(wheel), "")


def test_a_slot_reporting_another_version_is_refused(running_slot: Path, tmp_path: Path) -> None:
    wheel = agent_wheel(tmp_path, "4.0", prints="3.9")
    with pytest.raises(SelfUpdateError, match="reports agent version '3.9', the bundle is 4.0"):
        install_wheel(PYTHON, running_slot, running_slot.parent / "b", wheel, inspect_wheel(wheel), "")


def test_never_into_the_running_slot(running_slot: Path, tmp_path: Path) -> None:
    wheel = agent_wheel(tmp_path, "5.0")
    with pytest.raises(SelfUpdateError, match="running slot"):
        install_wheel(PYTHON, running_slot, running_slot, wheel, inspect_wheel(wheel), "")
