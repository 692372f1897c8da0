"""Wheels for the agent self-update tests (standard library only).

``make_wheel`` writes a small, valid wheel from a mapping of files; ``rebuild_wheel``
takes a real wheel of this project and gives it another version and changed
files (the dist-info is renamed and RECORD rewritten with the new hashes), which
is how the tests make a "good" and a "broken" next agent version without
building the project three times.
"""

import base64
import hashlib
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

ENTRY_POINTS = "[console_scripts]\nedgefleet-agent = agent.cli:main\n"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(path: Path, files: Mapping[str, bytes], dist_info: str) -> Path:
    """Zip ``files`` plus a RECORD listing them into ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = "\n".join([*(_record_line(name, data) for name, data in files.items()), f"{dist_info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{dist_info}/RECORD", record)
    return path


def make_wheel(directory: Path, version: str = "9.9.9", name: str = "edgefleet",
               extra: Mapping[str, bytes] | None = None, entry_points: str = ENTRY_POINTS,
               tag: str = "py3-none-any", requires: tuple[str, ...] = ()) -> Path:
    """A minimal wheel of ``name`` (by default one the agent accepts as its bundle)."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        "agent/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{dist_info}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                  + "".join(f"Requires-Dist: {item}\n" for item in requires)).encode(),
        f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: edgefleet-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
        .encode(),
        f"{dist_info}/entry_points.txt": entry_points.encode(),
        **(extra or {}),
    }
    return write_wheel(directory / f"{name}-{version}-{tag}.whl", files, dist_info)


def rebuild_wheel(source: Path, directory: Path, version: str,
                  edit: Callable[[str, bytes], bytes] | None = None) -> Path:
    """``source`` (a wheel of edgefleet) as version ``version``, each file passed through ``edit(name, data)``."""
    with zipfile.ZipFile(source) as archive:
        originals = {name: archive.read(name) for name in archive.namelist()}
    old_info = next(name.split("/")[0] for name in originals if name.split("/")[0].endswith(".dist-info"))
    old_version = old_info[len("edgefleet-"):-len(".dist-info")]
    new_info = f"edgefleet-{version}.dist-info"
    files: dict[str, bytes] = {}
    for name, data in originals.items():
        if name == f"{old_info}/RECORD":
            continue
        if name.startswith(f"{old_info}/"):
            name = new_info + name[len(old_info):]
            if name.endswith("/METADATA"):
                data = data.replace(f"\nVersion: {old_version}\n".encode(), f"\nVersion: {version}\n".encode())
        if name == "agent/__init__.py":
            data = data.replace(f'__version__ = "{old_version}"'.encode(), f'__version__ = "{version}"'.encode())
        files[name] = edit(name, data) if edit else data
    return write_wheel(directory / f"edgefleet-{version}-py3-none-any.whl", files, new_info)
