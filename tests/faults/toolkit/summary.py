"""The fault suite's figures: one record per scenario, written to a JSON file.

The file (default ``tests/artifacts/fault_summary.json``, git-ignored; ``EDGEFLEET_FAULT_SUMMARY``
overrides it) is updated after every scenario: records of scenarios run earlier and not run
this time are kept, so a targeted run refreshes only its own rows. Written atomically.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.storage import atomic_write_json

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "artifacts" / "fault_summary.json"
PATH_ENV = "EDGEFLEET_FAULT_SUMMARY"


def summary_path() -> Path:
    return Path(os.environ.get(PATH_ENV) or DEFAULT_PATH)


@dataclass
class TelemetryCount:
    """Telemetry windows a scenario's devices produced (within the buffer bound) vs what the server stored."""

    sent: int
    stored: int
    duplicates: int
    lost: int
    evicted: int = 0  # dropped on the device by the buffer bound (counted and reported by the agent)


@dataclass
class ScenarioRecord:
    scenario: str
    devices: int
    serving: dict[str, int]  # devices on old / new / none / inconsistent
    final_state: str | dict[str, int]  # rollout state, or device count per deployment state
    network_mechanism: str | None = None
    telemetry: TelemetryCount | None = None
    faults: dict[str, Any] = field(default_factory=dict)  # what was injected, and how often
    duration_s: float = 0.0
    notes: str = ""


class FaultSummary:
    def __init__(self, path: Path | None = None, environment: dict[str, Any] | None = None) -> None:
        self.path = path or summary_path()
        self.environment = environment or {}
        self._lock = threading.Lock()

    def record(self, record: ScenarioRecord) -> None:
        with self._lock:
            document = self._load()
            scenarios = [s for s in document.get("scenarios", []) if s.get("scenario") != record.scenario]
            scenarios.append(asdict(record))
            scenarios.sort(key=lambda s: s["scenario"])
            document.update(
                generated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                machine={"python": platform.python_version(), "cpus": os.cpu_count(), "kernel": platform.release()},
                environment={**document.get("environment", {}), **self.environment},
                scenarios=scenarios,
            )
            atomic_write_json(self.path, document)

    def _load(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return document if isinstance(document, dict) else {}
