"""The promise every fault scenario checks: each device serves its old or its new model, never
none, and what the server says about each device agrees with what the device serves."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fleet_server.processes import WaitTimeoutError, wait_until
from tests.faults.fleet import PARALLEL, SAMPLE, FaultFleet, FleetAgent
from tests.faults.toolkit.observe import Serving, answered_version, serving, tally

NOT_INSTALLED = ("failed", "rejected", "rolled_back", "timed_out", "skipped")  # deployment states, rollout statuses


def settled_serving(agent: FleetAgent, model: str, cli: bool = True, timeout: float = 30.0) -> Serving:
    """What ``agent`` serves once its endpoint answers (a restarted agent loads its slot first)."""
    try:
        wait_until(lambda: answered_version(agent, model, SAMPLE) is not None, timeout,
                   f"{agent.device_id} to answer inferences")
    except WaitTimeoutError:
        pass  # reported as serving none below
    return serving(agent, model, SAMPLE, cli)


def check_fleet(fleet: FaultFleet, model: str, old_version: int | None, new_version: int,
                final: dict[str, Any] | None = None, agents: list[FleetAgent] | None = None,
                cli: bool = False) -> dict[str, int]:
    """Assert the invariants; return devices per class (old/new/none/inconsistent).

    Each device is asked for an inference and for its status report; ``cli=True`` gets the
    report from the ``edgefleet-agent status`` command (a scenario's final check does).
    """
    agents = fleet.agents if agents is None else agents
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {agent.device_id: pool.submit(settled_serving, agent, model, cli) for agent in agents}
        reports = {device_id: future.result() for device_id, future in futures.items()}
    counts = tally(list(reports.values()), old_version, new_version)
    assert counts["none"] == 0 and counts["inconsistent"] == 0, reports
    for device_id, outcome in outcomes(final or {}).items():
        report = reports.get(device_id)
        if report is None:
            continue
        served = report.classify(old_version, new_version)
        if outcome == "succeeded":
            assert served == "new", (device_id, outcome, report)
        elif outcome in NOT_INSTALLED:
            assert served == "old", (device_id, outcome, report)
    return counts


def outcomes(final: dict[str, Any]) -> dict[str, str]:
    """Per device, what the server says became of it: a deployment's target states or a rollout's device statuses."""
    if "device_details" in final:
        return {device["device_id"]: device["status"] for device in final["device_details"]}
    return {target["device_id"]: target["state"] for target in final.get("targets", [])}


def states_of(final: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes(final).values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return dict(sorted(counts.items()))
