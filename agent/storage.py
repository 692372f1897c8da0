"""Crash-safe file writes: temp file + fsync + ``os.replace`` + directory fsync.

After a power cut a file written here holds either its old or its new bytes,
never a mix. Shared by the agent (state, slots, keys) and the server (keys).
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = 0o644) -> None:
    """Replace ``path`` atomically; ``mode=None`` skips chmod (FAT boot partitions refuse it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_json(path: Path, document: Any, mode: int = 0o644) -> None:
    atomic_write_bytes(path, json.dumps(document, indent=2, sort_keys=True).encode() + b"\n", mode)


def write_private_key(path: Path, pem: bytes) -> None:
    """Private keys are written owner-only (0600)."""
    atomic_write_bytes(path, pem, mode=0o600)
