"""Model slots on disk: ``slots/current``, ``slots/previous``, ``slots/staging``,
and ``slots/shadow`` (a candidate run next to the served model, never served).

Each slot is a directory holding the artifact file and ``slot.json``. A slot is
*complete* when its ``slot.json`` parses and its artifact has the recorded
length; ``slot.json`` is written last (atomically, fsynced), so a half-copied
slot is never taken for a complete one.

Switching is a sequence of directory renames, each atomic (rename(2)) and
followed by an fsync of ``slots/``:

    promote:   previous -> .trash-*    current -> previous    staging -> current
    roll_back: staging -> .trash-*     current -> .trash-*    previous -> current

A power cut can stop the sequence between two renames; the only state in
which ``current`` is missing then still has the model that belongs there,
complete, under ``staging`` (mid-promote) or ``previous`` (mid-promote before
staging moved, or mid-roll-back; roll_back discards staging first, so a
complete staging without current can only mean an interrupted promote).
``recover`` (run at every start) finishes the interrupted step: a complete
staging moves to current, else a complete previous does. So after a restart
the current slot holds the old model or the new one, never neither.

The shadow slot is written like staging (``stage(info, source, SHADOW)``) and
removed with ``discard_shadow``; it never takes part in a switch, and an
incomplete one is discarded by ``recover``.
"""

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import SlotError
from agent.protocol.errors import EdgeFleetError
from agent.protocol.metadata import ArtifactVariant, Release, TensorSpec
from agent.storage import atomic_write_bytes, atomic_write_json, fsync_directory

log = logging.getLogger(__name__)

CURRENT = "current"
PREVIOUS = "previous"
STAGING = "staging"
SHADOW = "shadow"
SLOT_FILE = "slot.json"
COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SlotInfo:
    release_name: str
    release_version: int
    variant: str
    runtime: str
    path: str  # artifact file, relative to the slot directory
    sha256: str
    length: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sequence: int = 0
    installed_at: float = 0.0
    profile_sha256: str | None = None  # the release's reference profile, kept in the slot (telemetry)

    def to_dict(self) -> dict[str, Any]:
        return {
            "release_name": self.release_name,
            "release_version": self.release_version,
            "variant": self.variant,
            "runtime": self.runtime,
            "path": self.path,
            "sha256": self.sha256,
            "length": self.length,
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
            "sequence": self.sequence,
            "installed_at": self.installed_at,
            "profile_sha256": self.profile_sha256,
        }

    @classmethod
    def from_dict(cls, document: Any) -> "SlotInfo":
        try:
            return cls(
                release_name=str(document["release_name"]),
                release_version=int(document["release_version"]),
                variant=str(document["variant"]),
                runtime=str(document["runtime"]),
                path=str(document["path"]),
                sha256=str(document["sha256"]),
                length=int(document["length"]),
                inputs=tuple(TensorSpec.from_dict(t, "slot.inputs[]") for t in document["inputs"]),
                outputs=tuple(TensorSpec.from_dict(t, "slot.outputs[]") for t in document["outputs"]),
                sequence=int(document.get("sequence", 0)),
                installed_at=float(document.get("installed_at", 0.0)),
                profile_sha256=str(document["profile_sha256"]) if document.get("profile_sha256") else None,
            )
        except (KeyError, TypeError, ValueError, EdgeFleetError) as exc:
            raise SlotError(f"invalid {SLOT_FILE}: {exc}") from None


class SlotStore:
    """The three model slots under ``<data_dir>/slots``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def slot_dir(self, name: str) -> Path:
        return self.root / name

    def artifact_path(self, name: str, info: SlotInfo) -> Path:
        return self.root / name / info.path

    def read(self, name: str) -> SlotInfo | None:
        """The slot's description if the slot is complete, else None."""
        slot_file = self.root / name / SLOT_FILE
        try:
            info = SlotInfo.from_dict(json.loads(slot_file.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, SlotError) as exc:
            log.warning("event=slot_unreadable slot=%s error=%s", name, exc)
            return None
        try:
            size = self.artifact_path(name, info).stat().st_size
        except OSError:
            return None
        return info if size == info.length else None

    # -- steps ----------------------------------------------------------------

    def stage(self, info: SlotInfo, source: Path, slot: str = STAGING, extra: Mapping[str, bytes] | None = None
              ) -> None:
        """Copy ``source`` (and ``extra`` files, such as the reference profile) into a fresh staging
        (or shadow) slot, fsynced, ``slot.json`` last."""
        if slot not in (STAGING, SHADOW):
            raise SlotError(f"cannot stage into the {slot} slot")
        self._discard(slot)
        staging = self.root / slot
        target = staging / info.path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, COPY_CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
        fsync_directory(target.parent)
        for name, data in (extra or {}).items():
            atomic_write_bytes(staging / name, data)
        atomic_write_json(staging / SLOT_FILE, info.to_dict())
        fsync_directory(self.root)

    def promote(self) -> SlotInfo:
        """staging -> current, current -> previous (the old previous is dropped)."""
        staged = self.read(STAGING)
        if staged is None:
            raise SlotError("staging slot is not complete; nothing to promote")
        self._discard(PREVIOUS)
        if (self.root / CURRENT).exists():
            self._rename(CURRENT, PREVIOUS)
        self._rename(STAGING, CURRENT)
        self._purge_trash()
        return staged

    def roll_back(self) -> SlotInfo | None:
        """previous -> current; the current slot is dropped. Returns the new current (None if there was none)."""
        self._discard(STAGING)
        previous = self.read(PREVIOUS)
        self._discard(CURRENT)
        if previous is not None:
            self._rename(PREVIOUS, CURRENT)
        self._purge_trash()
        return previous

    def discard_staging(self) -> None:
        """Remove the staging slot (if any): what a failed install leaves behind."""
        self._discard(STAGING)
        self._purge_trash()

    def discard_shadow(self) -> None:
        """Remove the shadow slot (if any)."""
        self._discard(SHADOW)
        self._purge_trash()

    def recover(self) -> SlotInfo | None:
        """Finish a switch a crash interrupted; return the current slot afterwards."""
        self._purge_trash()
        current = self.read(CURRENT)
        if current is None:
            if (self.root / CURRENT).exists():
                self._discard(CURRENT)
            for candidate in (STAGING, PREVIOUS):
                if self.read(candidate) is not None:
                    log.warning("event=slot_recovered from=%s to=%s", candidate, CURRENT)
                    self._rename(candidate, CURRENT)
                    current = self.read(CURRENT)
                    break
        if (self.root / STAGING).exists() and self.read(STAGING) is None:
            self._discard(STAGING)
        if (self.root / PREVIOUS).exists() and self.read(PREVIOUS) is None:
            self._discard(PREVIOUS)
        if (self.root / SHADOW).exists() and self.read(SHADOW) is None:
            self._discard(SHADOW)
        self._purge_trash()
        return current

    # -- primitives -----------------------------------------------------------

    def _rename(self, source: str, target: str) -> None:
        os.rename(self.root / source, self.root / target)
        fsync_directory(self.root)

    def _discard(self, name: str) -> None:
        """Move a slot out of the way atomically (then delete it at leisure)."""
        if (self.root / name).exists():
            self._rename(name, f".trash-{os.urandom(16).hex()}")

    def _purge_trash(self) -> None:
        for entry in self.root.glob(".trash-*"):
            shutil.rmtree(entry, ignore_errors=True)


def slot_info_for(release: Release, variant: ArtifactVariant, sequence: int) -> SlotInfo:
    """The slot description of ``variant`` of ``release``."""
    return SlotInfo(
        release_name=release.name,
        release_version=release.version,
        variant=variant.name,
        runtime=variant.runtime.value,
        path=variant.path,
        sha256=variant.sha256,
        length=variant.length,
        inputs=tuple(release.inputs),
        outputs=tuple(release.outputs),
        sequence=sequence,
        installed_at=time.time(),
        profile_sha256=release.reference_profile_sha256,
    )
