"""A small file system of its own for an agent's data directory, to run it out of space.

``SmallDisk`` mounts a tmpfs of a fixed size (needs root, or CAP_SYS_ADMIN), else a
loop-mounted ext4 file. ``fill(leave_free=N)`` then takes all but N bytes with a filler file
and ``unfill()`` gives them back, so a test decides exactly when the device's disk is full.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.faults.toolkit import FaultToolkitError

FILLER = ".fault-filler"
CHUNK = 1024 * 1024


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


def mount_capability() -> str | None:
    """None if this process may mount file systems, else why not."""
    if os.geteuid() != 0:
        return "mounting a small file system needs root (or CAP_SYS_ADMIN)"
    if shutil.which("mount") is None:
        return "no mount command"
    return None


class SmallDisk:
    """A file system of ``size_bytes`` mounted at ``path`` (created, and removed at unmount)."""

    def __init__(self, path: Path, size_bytes: int) -> None:
        self.path = Path(path)
        self.size_bytes = size_bytes
        self.mechanism: str | None = None
        self._image: Path | None = None

    def __enter__(self) -> SmallDisk:
        return self.mount()

    def __exit__(self, *exc_info: object) -> None:
        self.unmount()

    def mount(self) -> SmallDisk:
        reason = mount_capability()
        if reason:
            raise FaultToolkitError(reason)
        self.path.mkdir(parents=True, exist_ok=True)
        tmpfs = _run("mount", "-t", "tmpfs", "-o", f"size={self.size_bytes},mode=0755", "edgefleet-fault",
                     str(self.path))
        if tmpfs.returncode == 0:
            self.mechanism = "tmpfs"
            return self
        self._image = self.path.with_name(self.path.name + ".img")
        with open(self._image, "wb") as image:
            image.truncate(max(self.size_bytes, 2 * CHUNK))
        steps = (("mkfs.ext4", "-q", "-F", "-m", "0", str(self._image)),
                 ("mount", "-o", "loop", str(self._image), str(self.path)))
        for argv in steps:
            result = _run(*argv)
            if result.returncode != 0:
                self._image.unlink(missing_ok=True)
                raise FaultToolkitError(f"cannot mount a small file system: tmpfs: {tmpfs.stderr.strip()}; "
                                        f"{argv[0]}: {result.stderr.strip()}")
        self.mechanism = "loop-ext4"
        return self

    def free_bytes(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def fill(self, leave_free: int) -> int:
        """Occupy space until about ``leave_free`` bytes remain (page granularity); return what is left."""
        filler = self.path / FILLER
        with open(filler, "ab") as handle:
            take = self.free_bytes() - leave_free
            block = b"\0" * CHUNK
            while take > 0:
                try:
                    handle.write(block[: min(take, CHUNK)])
                    handle.flush()
                except OSError:
                    break
                take = self.free_bytes() - leave_free
        return self.free_bytes()

    def unfill(self) -> None:
        (self.path / FILLER).unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mechanism is None:
            return
        result = _run("umount", str(self.path))
        if result.returncode != 0:
            _run("umount", "-l", str(self.path))
        if self._image is not None:
            self._image.unlink(missing_ok=True)
        self.mechanism = None
