"""What the firmware tests install: a wheel of this repository, a wheelhouse of its agent
dependencies (cached), and A/B agent slots made from them, as install.sh makes them."""

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from agent.selfupdate.installer import clone_tree, site_packages

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware_images"
CACHE = Path(os.environ.get("EDGEFLEET_TEST_CACHE") or Path.home() / ".cache" / "edgefleet")
SOURCES = ("pyproject.toml", "README.md", "agent", "fleet_server", "compression")
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
PIP_QUIET = ["--disable-pip-version-check", "--no-input", "--quiet"]


def run(argv: list[str], timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def build_wheel(directory: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the repository's sources (so the tree gets no build/ dir)."""
    source = directory / "source"
    for name in SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".pytest_cache"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / name)
    run([sys.executable, "-m", "pip", "wheel", *PIP_QUIET, "--no-deps", "-w", str(directory), str(source)])
    (wheel,) = directory.glob("edgefleet-*.whl")
    return wheel


def wheelhouse(wheel: Path, extras: str = "agent") -> Path:
    """The wheels ``edgefleet[extras]`` depends on, for this interpreter and machine (downloaded once)."""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + f"{extras} {sys.version_info[:2]} "
                         f"{platform.machine()}".encode()).hexdigest()[:16]
    target = CACHE / "wheelhouse" / key
    if (target / ".complete").is_file():
        return target
    partial = target.with_name(f"{key}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    run([sys.executable, "-m", "pip", "download", *PIP_QUIET, "--dest", str(partial), f"{wheel}[{extras}]"])
    for own in partial.glob("edgefleet-*.whl"):
        own.unlink()
    (partial / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def make_layout(root: Path, wheel: Path, wheels: Path, extras: str = "agent") -> Path:
    """An A/B install root like install.sh leaves it: slot a installed, current and confirmed -> slots/a."""
    slot = root / "slots" / "a"
    slot.parent.mkdir(parents=True)
    run([BASE_PYTHON, "-m", "venv", "--without-pip", str(slot)])
    packages = site_packages(slot)
    pip = importlib.metadata.distribution("pip")  # this interpreter's pip, hard-linked in (ensurepip is slow)
    for entry in {"pip", Path(str(pip._path)).name}:  # type: ignore[attr-defined]
        clone_tree(Path(str(pip.locate_file(entry))), packages / entry, set())
    run([str(slot / "bin" / "python"), "-m", "pip", "install", *PIP_QUIET, "--no-index", "--no-cache-dir",
         "--no-compile", "--find-links", str(wheels), f"{wheel}[{extras}]"])  # no .pyc: saves CPU in CI
    (root / "install.json").write_text(json.dumps({"python": BASE_PYTHON, "extras": extras}))
    for link in ("current", "confirmed"):
        (root / link).symlink_to("slots/a")
    return root
