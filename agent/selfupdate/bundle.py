"""The bundle of an agent release: a wheel of the ``edgefleet`` distribution.

``inspect_wheel`` checks a file is one (a zip with exactly one ``*.dist-info``
holding ``WHEEL``, ``METADATA`` naming ``edgefleet`` and a version, the agent
package and its ``edgefleet-agent`` console script, no absolute or ``..``
member names) and returns what it is. The server runs it on upload, the agent
before installing; both reject anything else with ``InvalidBundleError``.
The canonical wheel file name (``edgefleet-0.2.0-py3-none-any.whl``) is what
pip needs to install the downloaded, content-addressed file.
"""

import re
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

from agent.errors import InvalidBundleError

DISTRIBUTION = "edgefleet"
CONSOLE_SCRIPT = "edgefleet-agent = agent.cli:main"
MAX_METADATA_BYTES = 1024 * 1024
MAX_MEMBERS = 20_000
VERSION = re.compile(r"[0-9]+(\.[0-9]+)*((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?(\+[a-z0-9]+(\.[a-z0-9]+)*)?",
                     re.IGNORECASE)
TAG = re.compile(r"[A-Za-z0-9_.]+-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+")


@dataclass(frozen=True)
class AgentBundle:
    distribution: str
    version: str
    tags: tuple[str, ...]  # e.g. ("py3-none-any",)

    @property
    def filename(self) -> str:
        """The wheel's canonical file name (PEP 427), which pip insists on."""
        interpreters = ".".join(sorted({tag.split("-")[0] for tag in self.tags}))
        abis = ".".join(sorted({tag.split("-")[1] for tag in self.tags}))
        platforms = ".".join(sorted({tag.split("-")[2] for tag in self.tags}))
        return f"{self.distribution}-{self.version}-{interpreters}-{abis}-{platforms}.whl"


def _read_text(archive: zipfile.ZipFile, name: str) -> str:
    info = archive.getinfo(name)
    if info.file_size > MAX_METADATA_BYTES:
        raise InvalidBundleError(f"{name} is larger than {MAX_METADATA_BYTES} bytes")
    try:
        return archive.read(info).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidBundleError(f"{name} is not UTF-8 text") from None


def _check_names(names: list[str]) -> None:
    if len(names) > MAX_MEMBERS:
        raise InvalidBundleError(f"the wheel has more than {MAX_MEMBERS} files")
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or "\\" in name:
            raise InvalidBundleError(f"the wheel has an unsafe file name {name!r}")


def inspect_wheel(path: Path) -> AgentBundle:
    """What agent bundle ``path`` is; ``InvalidBundleError`` unless it is a wheel of edgefleet."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            _check_names(names)
            dist_infos = sorted({name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info")})
            if len(dist_infos) != 1:
                raise InvalidBundleError(f"a wheel has one .dist-info directory, this zip has {len(dist_infos)}")
            dist_info = dist_infos[0]
            for required in ("WHEEL", "METADATA", "RECORD"):
                if f"{dist_info}/{required}" not in names:
                    raise InvalidBundleError(f"the wheel lacks {dist_info}/{required}")
            wheel = HeaderParser().parsestr(_read_text(archive, f"{dist_info}/WHEEL"))
            metadata = HeaderParser().parsestr(_read_text(archive, f"{dist_info}/METADATA"))
            entry_points = (_read_text(archive, f"{dist_info}/entry_points.txt")
                            if f"{dist_info}/entry_points.txt" in names else "")
    except zipfile.BadZipFile as exc:
        raise InvalidBundleError(f"not a zip archive: {exc}") from None
    except OSError as exc:
        raise InvalidBundleError(f"cannot read the wheel: {exc}") from None
    name, version = metadata.get("Name", ""), metadata.get("Version", "")
    if re.sub(r"[-_.]+", "-", name).lower() != DISTRIBUTION:
        raise InvalidBundleError(f"the wheel is {name or 'unnamed'!r}, not the {DISTRIBUTION} agent")
    if not VERSION.fullmatch(version):
        raise InvalidBundleError(f"the wheel's version {version!r} is not a PEP 440 version")
    if not str(wheel.get("Wheel-Version", "")).startswith("1."):
        raise InvalidBundleError(f"unsupported Wheel-Version {wheel.get('Wheel-Version')!r}")
    tags = tuple(str(tag) for tag in wheel.get_all("Tag") or ())
    if not tags or not all(TAG.fullmatch(tag) for tag in tags):
        raise InvalidBundleError("the wheel's WHEEL file lists no valid Tag")
    if "agent/__init__.py" not in names:
        raise InvalidBundleError("the wheel does not contain the agent package")
    if CONSOLE_SCRIPT not in {line.replace(" ", "").replace("=", " = ") for line in entry_points.splitlines()}:
        raise InvalidBundleError("the wheel does not provide the edgefleet-agent command")
    return AgentBundle(DISTRIBUTION, version, tags)
