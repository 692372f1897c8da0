"""What a device serves, seen from outside, and killing an agent at a chosen deployment state.

A device is asked twice: its KServe endpoint must answer an inference (the version in the
answer is what it serves), and ``edgefleet-agent status`` must name the same version in the
current slot. ``classify`` turns both into ``old``, ``new``, ``none`` or ``inconsistent``.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.status import status_report
from fleet_server.localfleet import BIN_DIR, LocalAgent
from tests.faults.toolkit import FaultToolkitError

IN_FLIGHT = ("notified", "downloading", "verifying", "installing", "health_check")


def agent_status(data_dir: Path, cli: bool = True, timeout: float = 30.0) -> dict[str, Any]:
    """``edgefleet-agent status`` for a data directory (works whether the agent runs or not).

    ``cli=False`` reads the same report in this process (``agent.status``), without the cost of
    starting the command, for checks repeated within a scenario.
    """
    if not cli:
        return status_report(Path(data_dir))
    result = subprocess.run([str(BIN_DIR / "edgefleet-agent"), "--data-dir", str(data_dir), "status"],
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise FaultToolkitError(f"edgefleet-agent status failed for {data_dir}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def read_state(data_dir: Path) -> str | None:
    """The deployment state in ``state.json`` right now (None if absent or mid-replace)."""
    try:
        return json.loads((Path(data_dir) / "state.json").read_bytes()).get("state")
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Serving:
    device_id: str
    answered_version: int | None  # the version in a KServe inference answer; None: no answer
    slot_version: int | None  # the current slot per ``edgefleet-agent status``
    state: str
    reason: str | None

    def classify(self, old_version: int | None, new_version: int) -> str:
        if self.answered_version != self.slot_version:
            return "inconsistent"
        if self.answered_version is None:
            return "none"
        if self.answered_version == new_version:
            return "new"
        if self.answered_version == old_version:
            return "old"
        return "inconsistent"


def answered_version(agent: LocalAgent, model: str, rows: list[list[float]]) -> int | None:
    try:
        answer = agent.infer(model, rows)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    outputs = answer.get("outputs") or []
    if not outputs or not all(output.get("data") for output in outputs):
        return None
    return int(answer["model_version"])


def serving(agent: LocalAgent, model: str, rows: list[list[float]], cli: bool = True) -> Serving:
    status = agent_status(agent.data_dir, cli)
    current = status.get("current")
    return Serving(agent.device_id, answered_version(agent, model, rows),
                   int(current["version"]) if current and current.get("name") == model else None,
                   status["state"], status.get("reason"))


def tally(reports: list[Serving], old_version: int | None, new_version: int) -> dict[str, int]:
    """Devices per class: always the keys old, new, none, inconsistent."""
    counts = {"old": 0, "new": 0, "none": 0, "inconsistent": 0}
    for report in reports:
        counts[report.classify(old_version, new_version)] += 1
    return counts


def kill_at_state(agent: LocalAgent, states: tuple[str, ...], timeout: float = 60.0,
                  interval: float = 0.001) -> str:
    """SIGKILL ``agent`` as soon as its ``state.json`` shows one of ``states``.

    Returns the state the agent had persisted when it died (it may have moved on in the
    instant between the observation and the signal: the caller records the true one).
    """
    assert agent.process is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read_state(agent.data_dir) in states:
            agent.kill()
            break
        agent.process.check_alive()
        time.sleep(interval)
    else:
        raise FaultToolkitError(f"{agent.device_id} never reached {states} within {timeout:.0f}s")
    return read_state(agent.data_dir) or "unknown"
