"""Content-addressed artifact files: ``<root>/<sha256[:2]>/<sha256>``.

Uploads are first written into ``<root>/tmp`` (same file system, so the final
``os.replace`` is atomic) and only moved into place once they were hashed and
checked. Stored files are immutable: the name is the hash of the content.
"""

import logging
import os
import re
import tempfile
import time
from pathlib import Path

from agent.storage import fsync_directory

logger = logging.getLogger(__name__)

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
STALE_STAGING_AGE_S = 24 * 3600


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.staging_dir = self.root / "tmp"

    def prepare(self) -> None:
        """Create the directories and drop staging files left by a crash."""
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - STALE_STAGING_AGE_S
        for leftover in self.staging_dir.glob("upload-*"):
            try:
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    logger.info("server event=staging_file_removed path=%s", leftover)
            except FileNotFoundError:
                continue

    def new_staging_file(self) -> Path:
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=self.staging_dir)
        os.close(fd)
        return Path(name)

    def path_for(self, sha256: str) -> Path:
        if not SHA256_HEX.fullmatch(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def find(self, sha256: str) -> Path | None:
        """The stored file for ``sha256``, or None (also for a malformed digest)."""
        if not SHA256_HEX.fullmatch(sha256):
            return None
        path = self.path_for(sha256)
        return path if path.is_file() else None

    def commit(self, staged: Path, sha256: str) -> Path:
        """Move a fully written, hashed staging file to its content address."""
        final = self.path_for(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_file() and final.stat().st_size == staged.stat().st_size:
            staged.unlink()  # identical content already stored
            return final
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(staged, 0o644)
        os.replace(staged, final)
        fsync_directory(final.parent)
        logger.info("server event=artifact_stored sha256=%s bytes=%d", sha256, final.stat().st_size)
        return final
