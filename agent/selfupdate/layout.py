"""The agent's A/B install layout (``/opt/edgefleet-agent`` on a device, made by install.sh):

    install.json            how slots are built: {"python": "/usr/bin/python3", "extras": "agent"}
    slots/a, slots/b        two virtual environments, each a complete agent
    current -> slots/a      what the service starts (ExecStart goes through it)
    confirmed -> slots/a    the last agent that came up and reported; the service runs its guard
    trial.json              a pending self-update (``agent.selfupdate.trial.Trial``)
    result.json             how the last self-update ended (``UpdateResult``)
    guard.lock              serializes the guard's decisions with the new agent's confirmation

Links are relative (``slots/a``) and switched atomically: a new link under a
temporary name is renamed over the old one and the directory fsynced, so a
power cut leaves the old target or the new one. State files are written with
``agent.storage`` (temp file, fsync, rename).
"""

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import SelfUpdateError
from agent.selfupdate.trial import CONFIRMED as CONFIRMED_OUTCOME
from agent.selfupdate.trial import ROLLED_BACK, SLOT_NAMES, Trial, UpdateResult
from agent.storage import atomic_write_json, fsync_directory

CURRENT = "current"
CONFIRMED = "confirmed"
SETTINGS_FILE = "install.json"
TRIAL_FILE = "trial.json"
RESULT_FILE = "result.json"
LOCK_FILE = "guard.lock"


@dataclass(frozen=True)
class InstallSettings:
    python: str  # the interpreter new slots are created with
    extras: str  # the extras of edgefleet the slots install ("agent", "agent-tflite-legacy", "")

    @classmethod
    def from_dict(cls, document: Any) -> "InstallSettings":
        if not isinstance(document, dict) or not isinstance(document.get("python"), str) \
                or not isinstance(document.get("extras", ""), str):
            raise ValueError("install.json must hold {'python': str, 'extras': str}")
        return cls(document["python"], document.get("extras", ""))


class InstallLayout:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.slots = self.root / "slots"

    def slot_dir(self, slot: str) -> Path:
        if slot not in SLOT_NAMES:
            raise SelfUpdateError(f"unknown agent slot {slot!r}")
        return self.slots / slot

    @staticmethod
    def other_slot(slot: str) -> str:
        return SLOT_NAMES[1] if slot == SLOT_NAMES[0] else SLOT_NAMES[0]

    # -- links ------------------------------------------------------------------

    def target(self, link: str) -> str | None:
        """The slot a link (``current``/``confirmed``) points at, or None if missing or foreign."""
        try:
            target = Path(os.readlink(self.root / link))
        except OSError:
            return None
        if target.parent.name == self.slots.name and target.name in SLOT_NAMES:
            return target.name
        return None

    def switch(self, link: str, slot: str) -> None:
        """Point ``link`` at ``slot`` atomically."""
        self.slot_dir(slot)
        temporary = self.root / f".{link}.{os.urandom(16).hex()}"
        os.symlink(f"{self.slots.name}/{slot}", temporary)
        try:
            os.replace(temporary, self.root / link)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        fsync_directory(self.root)

    def slot_of(self, prefix: Path) -> str | None:
        """The slot whose virtual environment is ``prefix`` (e.g. ``sys.prefix``), if any."""
        resolved = Path(prefix).resolve()
        for slot in SLOT_NAMES:
            if resolved == self.slot_dir(slot).resolve():
                return slot
        return None

    # -- state files ------------------------------------------------------------

    def _read(self, name: str) -> Any | None:
        try:
            return json.loads((self.root / name).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SelfUpdateError(f"cannot read {self.root / name}: {exc}") from None

    def read_settings(self) -> InstallSettings:
        document = self._read(SETTINGS_FILE)
        if document is None:
            raise SelfUpdateError(f"{self.root} has no {SETTINGS_FILE}: not an A/B agent install")
        try:
            return InstallSettings.from_dict(document)
        except ValueError as exc:
            raise SelfUpdateError(f"{self.root / SETTINGS_FILE}: {exc}") from None

    def write_settings(self, settings: InstallSettings) -> None:
        atomic_write_json(self.root / SETTINGS_FILE, {"python": settings.python, "extras": settings.extras})

    def read_trial(self) -> Trial | None:
        document = self._read(TRIAL_FILE)
        try:
            return None if document is None else Trial.from_dict(document)
        except ValueError as exc:
            raise SelfUpdateError(f"{self.root / TRIAL_FILE} is invalid: {exc}") from None

    def write_trial(self, trial: Trial) -> None:
        atomic_write_json(self.root / TRIAL_FILE, trial.to_dict())

    def clear_trial(self) -> None:
        (self.root / TRIAL_FILE).unlink(missing_ok=True)
        fsync_directory(self.root)

    def read_result(self) -> UpdateResult | None:
        document = self._read(RESULT_FILE)
        try:
            return None if document is None else UpdateResult.from_dict(document)
        except ValueError as exc:
            raise SelfUpdateError(f"{self.root / RESULT_FILE} is invalid: {exc}") from None

    def write_result(self, result: UpdateResult) -> None:
        atomic_write_json(self.root / RESULT_FILE, result.to_dict())

    # -- the two ends of a trial (call with the lock held) ------------------------

    def revert(self, trial: Trial, reason: str, now: float) -> UpdateResult:
        """Give up on the candidate: the previous slot is current and confirmed again."""
        result = UpdateResult(trial.sequence, ROLLED_BACK, trial.version, trial.previous, reason, now)
        self.write_result(result)
        self.switch(CURRENT, trial.previous)
        if self.target(CONFIRMED) != trial.previous:
            self.switch(CONFIRMED, trial.previous)
        self.clear_trial()
        return result

    def confirm(self, slot: str, sequence: int, now: float) -> UpdateResult | None:
        """The candidate running in ``slot`` came up and reported: it becomes the confirmed slot.

        None (and nothing changed) unless ``slot`` is the current candidate of trial ``sequence``.
        """
        trial = self.read_trial()
        if trial is None or trial.sequence != sequence or trial.candidate != slot or self.target(CURRENT) != slot:
            return None
        self.switch(CONFIRMED, slot)
        result = UpdateResult(sequence, CONFIRMED_OUTCOME, trial.version, slot, None, now)
        self.write_result(result)
        self.clear_trial()
        return result

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock shared by the guard and the agent (released when the process dies)."""
        with open(self.root / LOCK_FILE, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def detect_layout(prefix: Path | None = None) -> tuple[InstallLayout, str] | None:
    """The layout this interpreter runs from and its slot; None when the agent is not installed A/B."""
    resolved = Path(sys.prefix if prefix is None else prefix).resolve()
    if resolved.parent.name != "slots" or resolved.name not in SLOT_NAMES:
        return None
    layout = InstallLayout(resolved.parent.parent)
    if not (layout.root / SETTINGS_FILE).is_file():
        return None
    return layout, resolved.name
