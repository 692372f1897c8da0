"""Fixtures of the fault suite: the summary file and a fresh fleet per scenario."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.fleet import FaultFleet
from tests.faults.toolkit.netns import probe
from tests.faults.toolkit.summary import FaultSummary, ScenarioRecord
from tests.helpers.mosquitto import MosquittoBroker

_written: list[Path] = []


class SummaryRecorder:
    def __init__(self, summary: FaultSummary) -> None:
        self.summary = summary

    def __call__(self, record: ScenarioRecord) -> None:
        self.summary.record(record)
        if self.summary.path not in _written:
            _written.append(self.summary.path)


@pytest.fixture(scope="session")
def fault_summary() -> SummaryRecorder:
    return SummaryRecorder(FaultSummary(environment={"network_faults": probe().describe()}))


@pytest.fixture
def fleet(tmp_path: Path, mosquitto_factory: Callable[..., MosquittoBroker]) -> Iterator[Callable[..., FaultFleet]]:
    """``fleet(**server_env)``: a broker of its own and a started server on it; agents are added by the test."""
    fleets: list[FaultFleet] = []

    def make(**server_env: str) -> FaultFleet:
        fleet = FaultFleet(tmp_path, mosquitto_factory(), server_env=server_env)
        fleets.append(fleet)
        return fleet.start()

    try:
        yield make
    finally:
        for fleet in fleets:
            fleet.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for path in _written:
        terminalreporter.write_line(f"fault summary written to {path}")
