"""The artifact server answers some requests with errors, truncated bodies, stalls or wrong bytes.

Each device downloads through a proxy of its own with its own fault plan. Errors, truncations
and stalls cost retries (resumed with ``Range``) and nothing else: those devices end on the
new model. Wrong bytes can never become the served model: that device rejects the artifact
(hash mismatch), keeps its old model, and takes the release when it is deployed again.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.fleet import FaultFleet
from tests.faults.invariants import check_fleet, states_of
from tests.faults.toolkit.http_faults import HttpAction, HttpFaultKind, HttpFaultPlan, HttpFaultRule
from tests.faults.toolkit.summary import ScenarioRecord

pytestmark = pytest.mark.slow

NAME = "digits-artifact-faults"


def rule(kind: HttpFaultKind, nth: set[int] | None = None, **fields: float) -> HttpFaultRule:
    action_fields = {key: int(value) for key, value in fields.items() if key in ("status", "body_bytes")}
    selection = {key: value for key, value in fields.items() if key in ("probability", "limit")}
    if "limit" in selection:
        selection["limit"] = int(selection["limit"])
    return HttpFaultRule(HttpAction(kind, **action_fields), nth=frozenset(nth or ()), **selection)


PLANS: dict[str, list[HttpFaultRule]] = {
    "errors": [rule(HttpFaultKind.ERROR, {1, 2}, status=503), rule(HttpFaultKind.ERROR, {3}, status=500),
               rule(HttpFaultKind.ERROR, {4}, status=429)],
    "truncated": [rule(HttpFaultKind.TRUNCATE, {1}, body_bytes=300_000),
                  rule(HttpFaultKind.TRUNCATE, {2}, body_bytes=200_000)],
    "stalled": [rule(HttpFaultKind.STALL, {1}, body_bytes=400_000)],
    "wrong_bytes": [rule(HttpFaultKind.CORRUPT, {1}, body_bytes=500_000)],
    "mixed": [rule(HttpFaultKind.ERROR, probability=0.3, limit=4, status=503),
              rule(HttpFaultKind.TRUNCATE, probability=0.4, limit=4, body_bytes=150_000)],
}


def artifact_heads(fleet_agent) -> list[str]:
    return [head for head in fleet_agent.artifact_proxy.request_heads if "/api/v1/artifacts/" in head.split("\r\n")[0]]


def test_artifact_errors_truncation_stalls_and_wrong_bytes(fleet, fault_summary) -> None:
    started = time.monotonic()
    fleet: FaultFleet = fleet()
    agents = dict(zip(PLANS, fleet.add_agents(len(PLANS), artifact_proxy=True), strict=True))
    old = fleet.publish(NAME, "old")
    fleet.install_everywhere(NAME, old)
    new = fleet.publish(NAME, "new")
    plans = {kind: HttpFaultPlan(rules, seed=index) for index, (kind, rules) in enumerate(PLANS.items())}
    for kind, agent in agents.items():
        agent.artifact_proxy.request_heads.clear()
        agent.artifact_proxy.set_http_plan(plans[kind])

    final = fleet.roll_out(NAME, new, fleet.agents, expected_failures=1)

    assert final["state"] == "succeeded", final
    devices = {device["device_id"]: device for device in final["device_details"]}
    for kind, agent in agents.items():
        expected = ("failed", "rejected") if kind == "wrong_bytes" else ("succeeded", "succeeded")
        assert (devices[agent.device_id]["status"], devices[agent.device_id]["agent_state"]) == expected, kind
    assert "ArtifactMismatchError" in devices[agents["wrong_bytes"].device_id]["reason"]
    resumed = [head for head in artifact_heads(agents["truncated"]) if "range: bytes=" in head.lower()]
    assert len(resumed) >= 2, artifact_heads(agents["truncated"])
    assert any("range: bytes=" in head.lower() for head in artifact_heads(agents["stalled"]))
    assert plans["errors"].counts()["error"] == 4
    first = check_fleet(fleet, NAME, old, new, final)
    assert first == {"old": 1, "new": 4, "none": 0, "inconsistent": 0}

    agents["wrong_bytes"].artifact_proxy.set_http_plan(None)  # the artifact server is healthy again
    again = fleet.roll_out(NAME, new, [agents["wrong_bytes"]])
    assert again["state"] == "succeeded" and states_of(again) == {"succeeded": 1}
    counts = check_fleet(fleet, NAME, old, new, again, cli=True)
    assert counts["new"] == len(fleet.agents)

    fault_summary(ScenarioRecord(
        scenario="artifact_server_faults", devices=len(fleet.agents), serving=counts,
        final_state={"rollout": {"state": final["state"], **states_of(final)},
                     "second_rollout_to_the_rejecting_device": {"state": again["state"], **states_of(again)}},
        network_mechanism="tcp-proxy (HTTP fault plan per device)",
        faults={kind: plans[kind].counts() for kind in PLANS},
        duration_s=round(time.monotonic() - started, 1),
        notes="errors, truncations and stalls cost retries resumed with Range; wrong bytes were rejected "
              "(sha256 mismatch) with the old model serving, and the redeploy succeeded",
    ))
