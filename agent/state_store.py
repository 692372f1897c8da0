"""The persisted deployment record: ``<data_dir>/state.json``.

Written with ``atomic_write_json`` on every transition, so after a power cut
it holds the last state the agent reached. It keeps the signed directive and
release of the deployment in flight, which is what lets the updater resume
after a restart, and the last accepted sequence, which is what stops replays.
"""

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import StateFileError
from agent.statemachine import State
from agent.storage import atomic_write_json

STATE_FILE = "state.json"


@dataclass(frozen=True)
class DeploymentRecord:
    state: State = State.IDLE
    sequence: int = 0  # the directive this state belongs to (0: none)
    last_accepted_sequence: int = 0  # highest directive sequence that verified and was started
    action: str | None = None
    release_name: str | None = None
    release_version: int | None = None
    variant: str | None = None
    target_sha256: str | None = None  # artifact that must end up in the current slot
    reason: str | None = None
    accepted_at: str | None = None  # when the directive verified (re-verification on resume uses it)
    directive: dict[str, Any] | None = None  # signed directive envelope of the deployment in flight
    release: dict[str, Any] | None = None  # signed release envelope of the deployment in flight
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["state"] = self.state.value
        return document

    @classmethod
    def from_dict(cls, document: Any) -> "DeploymentRecord":
        if not isinstance(document, dict):
            raise StateFileError("state file must hold a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            values = {key: value for key, value in document.items() if key in known}
            values["state"] = State(document.get("state", State.IDLE.value))
            record = cls(**values)
        except (TypeError, ValueError) as exc:
            raise StateFileError(f"state file is inconsistent: {exc}") from None
        for name in ("sequence", "last_accepted_sequence"):
            value = getattr(record, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise StateFileError(f"state file field {name} must be an integer >= 0")
        return record

    def evolve(self, **changes: Any) -> "DeploymentRecord":
        return dataclasses.replace(self, updated_at=time.time(), **changes)


class StateStore:
    """Loads and atomically saves the deployment record."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / STATE_FILE

    def load(self) -> DeploymentRecord:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return DeploymentRecord()
        except OSError as exc:
            raise StateFileError(f"cannot read {self.path}: {exc}") from None
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise StateFileError(f"{self.path} is not valid JSON: {exc}") from None
        return DeploymentRecord.from_dict(document)

    def save(self, record: DeploymentRecord) -> None:
        atomic_write_json(self.path, record.to_dict())
