"""Install an agent wheel into a slot of the A/B layout, offline.

A device has no package index to count on, and the new agent mostly needs the
dependencies the running one has. So the slot is built from the running slot:

1. an empty virtual environment (``python -m venv --without-pip``) replaces the slot;
2. the running slot's site-packages are cloned into it with hard links (no extra
   space, no copying; pip and Python replace files rather than write into them,
   so the slots stay independent) — everything except the ``edgefleet``
   distribution itself;
3. ``pip install --no-index WHEEL[extras]`` installs the new agent; a dependency
   the clone does not satisfy fails the install here, before anything switched;
4. the slot's ``edgefleet-agent --version`` must print the bundle's version.

Any failure raises ``SelfUpdateError`` with the tail of the tool's output.
"""

import importlib.metadata
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from agent.errors import SelfUpdateError
from agent.selfupdate.bundle import DISTRIBUTION, AgentBundle

log = logging.getLogger(__name__)

PIP_TIMEOUT_S = 900.0
PURELIB = "import sysconfig; print(sysconfig.get_path('purelib'))"


def _run(argv: list[str], what: str, timeout: float = PIP_TIMEOUT_S) -> str:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise SelfUpdateError(f"{what} did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        raise SelfUpdateError(f"{what} could not run: {exc}") from None
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-4:])
        raise SelfUpdateError(f"{what} failed (exit {result.returncode}): {tail[-800:]}")
    return result.stdout


def site_packages(venv: Path) -> Path:
    """The purelib directory of the virtual environment ``venv``."""
    return Path(_run([str(venv / "bin" / "python"), "-c", PURELIB], f"the interpreter of {venv}", 60).strip())


def own_entries(packages: Path, distribution: str = DISTRIBUTION) -> set[str]:
    """Top-level entries of ``packages`` that belong to ``distribution`` (per its RECORD)."""
    entries: set[str] = set()
    for dist in importlib.metadata.distributions(path=[str(packages)]):
        if (dist.metadata["Name"] or "").lower() != distribution:
            continue
        for file in dist.files or ():
            parts = Path(str(file)).parts
            if parts and parts[0] != "..":
                entries.add(parts[0])
        dist_path = getattr(dist, "_path", None)
        if dist_path is not None:
            entries.add(Path(dist_path).name)
    return entries


def clone_tree(source: Path, target: Path, skip: set[str]) -> int:
    """Hard-link (or copy, across file systems) ``source`` into ``target``, leaving out top-level ``skip``."""
    count = 0
    for directory, subdirectories, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        if relative == Path("."):
            subdirectories[:] = [name for name in subdirectories if name not in skip]
            files = [name for name in files if name not in skip]
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in [name for name in subdirectories if (Path(directory) / name).is_symlink()]:
            subdirectories.remove(name)  # a link to a directory: recreated as a link, not walked
            os.symlink(os.readlink(Path(directory) / name), target / relative / name)
        for name in files:
            origin, copy = Path(directory) / name, target / relative / name
            if origin.is_symlink():
                os.symlink(os.readlink(origin), copy)
                continue
            try:
                os.link(origin, copy)
            except OSError:
                shutil.copy2(origin, copy)
            count += 1
    return count


def installed_version(slot_dir: Path) -> str:
    """The version the slot's ``edgefleet-agent --version`` reports."""
    output = _run([str(slot_dir / "bin" / "edgefleet-agent"), "--version"], "the new agent's --version", 120)
    return output.strip().split()[-1] if output.strip() else ""


def install_wheel(python: str, source_slot: Path, target_slot: Path, wheel: Path, bundle: AgentBundle,
                  extras: str) -> None:
    """Build ``target_slot`` from ``source_slot``'s dependencies and the agent ``wheel``."""
    if target_slot.resolve() == source_slot.resolve():
        raise SelfUpdateError("refusing to install into the running slot")
    source_packages = site_packages(source_slot)
    if target_slot.exists() or target_slot.is_symlink():
        shutil.rmtree(target_slot)
    _run([python, "-m", "venv", "--without-pip", str(target_slot)], "creating the virtual environment", 300)
    target_packages = site_packages(target_slot)
    files = clone_tree(source_packages, target_packages, own_entries(source_packages))
    log.info("event=agent_slot_cloned source=%s target=%s files=%d", source_slot, target_slot, files)
    with tempfile.TemporaryDirectory(prefix="edgefleet-bundle-") as scratch:
        named = Path(scratch) / bundle.filename  # pip wants the canonical wheel name
        shutil.copyfile(wheel, named)
        requirement = f"{named}[{extras}]" if extras else str(named)
        _run([str(target_slot / "bin" / "python"), "-m", "pip", "install", "--no-index", "--no-cache-dir",
              "--no-warn-script-location", requirement], "pip install of the agent bundle")
    version = installed_version(target_slot)
    if version != bundle.version:
        raise SelfUpdateError(f"the new slot reports agent version {version!r}, the bundle is {bundle.version}")
    log.info("event=agent_slot_installed slot=%s version=%s extras=%s", target_slot, version, extras or "-")
