"""Devices with skewed clocks: expiry is judged by the device's own clock, as the protocol says.

The protocol's time rule is expiry only (``now >= expires`` rejects; there is no not-before):
a clock behind accepts, a clock ahead accepts while the directive has time left by its clock,
and rejects it (``ExpiredError``) once it has none; a directive that runs out during a slow
download fails. A device whose clock is past its trusted root's expiry keeps serving and
rejects every directive. Whatever the verdict, the device serves its old or its new model,
and once its clock is right again a fresh directive installs the release. The releases go out
in staged rollouts, whose directives live for the rollout's device timeout (``TTL_S`` here).
"""

from __future__ import annotations

import time

import pytest

from tests.faults.fleet import FaultFleet, FleetAgent, in_parallel
from tests.faults.invariants import check_fleet, states_of
from tests.faults.toolkit.summary import ScenarioRecord

pytestmark = pytest.mark.slow

NAME = "digits-clock-skew"
TTL_S = 3600
DAY_S = 86400
OFFSETS: dict[str, float] = {  # device clock minus real time, seconds
    "in_sync": 0,
    "behind_one_day": -DAY_S,
    "ahead_within_ttl": TTL_S - 600,
    "ahead_past_ttl": TTL_S + 120,
    "ahead_expires_during_download": TTL_S - 4,
    "ahead_past_root_expiry": 400 * DAY_S,
}
EXPECTED = {
    "in_sync": ("succeeded", None),
    "behind_one_day": ("succeeded", None),
    "ahead_within_ttl": ("succeeded", None),
    "ahead_past_ttl": ("rejected", "directive expired"),
    "ahead_expires_during_download": ("failed", "DownloadExpiredError"),
    "ahead_past_root_expiry": ("rejected", "ExpiredError"),  # its root and the directive are both past expiry
}


def set_clock(fleet: FaultFleet, agent: FleetAgent, offset_s: float) -> None:
    """Restart ``agent`` with its clock ``offset_s`` seconds off."""
    agent.stop()
    agent.extra_env["EDGEFLEET_AGENT_CLOCK_OFFSET_S"] = str(offset_s)
    fleet.restart_agent(agent)


def test_clock_skew_follows_the_expiry_rules(fleet, fault_summary) -> None:
    started = time.monotonic()
    fleet: FaultFleet = fleet(EDGEFLEET_DIRECTIVE_TTL_S=str(TTL_S))
    agents = dict(zip(OFFSETS, fleet.add_agents(len(OFFSETS), artifact_proxy=True), strict=True))
    old = fleet.publish(NAME, "old")
    first = fleet.install_everywhere(NAME, old)
    offsets = {agent.device_id: OFFSETS[kind] for kind, agent in agents.items()}
    in_parallel(lambda agent: set_clock(fleet, agent, offsets[agent.device_id]), fleet.agents)
    slow = agents["ahead_expires_during_download"].artifact_proxy
    slow.shape(bandwidth_bps=64 * 1024)  # 1 MB takes ~16 s; the directive has ~4 s left by that clock

    new = fleet.publish(NAME, "new")
    final = fleet.roll_out(NAME, new, fleet.agents, expected_failures=3, timeout=90, device_timeout_s=TTL_S)

    assert final["state"] == "succeeded", final
    devices = {device["device_id"]: device for device in final["device_details"]}
    for kind, agent in agents.items():
        state, reason = EXPECTED[kind]
        device = devices[agent.device_id]
        assert device["agent_state"] == state, (kind, device)
        assert device["status"] == ("succeeded" if state == "succeeded" else "failed"), (kind, device)
        if reason:
            assert reason in (device["reason"] or ""), (kind, device)
    skewed = check_fleet(fleet, NAME, old, new, final)
    # the retained directive of the first deployment reached the skewed devices again at restart: a replay,
    # ignored (even with the root expired), so the finished deployment still reads succeeded everywhere
    assert states_of(fleet.client.deployment(first)) == {"succeeded": len(fleet.agents)}
    assert skewed == {"old": 3, "new": 3, "none": 0, "inconsistent": 0}

    not_installed = [agent for kind, agent in agents.items() if EXPECTED[kind][0] != "succeeded"]
    in_parallel(lambda agent: set_clock(fleet, agent, 0), not_installed)  # the clock is corrected (NTP is back)
    slow.clear()
    again = fleet.roll_out(NAME, new, not_installed, timeout=90, device_timeout_s=TTL_S)
    assert again["state"] == "succeeded" and states_of(again) == {"succeeded": len(not_installed)}
    counts = check_fleet(fleet, NAME, old, new, again, cli=True)
    assert counts["new"] == len(fleet.agents)

    fault_summary(ScenarioRecord(
        scenario="clock_skew", devices=len(fleet.agents), serving=counts,
        final_state={"rollout_while_skewed": {"state": final["state"], **states_of(final)},
                     "rollout_after_clock_fix": {"state": again["state"], **states_of(again)}},
        faults={"offsets_s": OFFSETS, "directive_ttl_s": TTL_S, "serving_while_skewed": skewed},
        duration_s=round(time.monotonic() - started, 1),
        notes="behind and within-TTL clocks installed; past-TTL and past-root-expiry clocks rejected the directive; "
              "an expiry during a slow download failed it; all kept serving and installed after the clock fix",
    ))
