"""Agents killed (SIGKILL: a power cut, as far as the process can tell) in the middle of an update.

Ten agents take three releases in a row, each in a staged rollout. In each round 10% of the fleet (one device, chosen at
random with a fixed seed) is killed at one point of its update: while downloading (after a
random share of the bytes), while verifying, and while installing (a random instant into the
slot copy and switch). It is started again a moment later. Each victim must come back to a
consistent slot, finish its deployment (resuming the download with Range, re-verifying,
settling the interrupted switch) and report it; the other nine are not disturbed.

Verification and installation of 1 MB take milliseconds, so those rounds ship a 4 MB release
and the state file is polled every millisecond; where the process actually was when it died is
read back from its persisted state and recorded in the summary.
"""

from __future__ import annotations

import random
import time

import pytest

from fleet_server.processes import wait_until
from tests.faults.fleet import RELEASE_BYTES, FaultFleet, FleetAgent
from tests.faults.invariants import check_fleet, states_of
from tests.faults.toolkit.observe import kill_at_state, read_state
from tests.faults.toolkit.summary import ScenarioRecord

pytestmark = pytest.mark.slow

NAME = "digits-agent-kills"
FLEET_SIZE = 10
BIG_RELEASE = 4 * 1024 * 1024
ROUNDS = (("downloading", RELEASE_BYTES), ("verifying", BIG_RELEASE), ("installing", BIG_RELEASE))


def part_bytes(agent: FleetAgent) -> int:
    return sum(part.stat().st_size for part in (agent.data_dir / "downloads").glob("*.part"))


def kill_mid_download(agent: FleetAgent, rng: random.Random) -> tuple[str, dict]:
    """Throttle the victim's link, kill it once a random share of the artifact arrived."""
    assert agent.artifact_proxy is not None
    agent.artifact_proxy.shape(bandwidth_bps=256 * 1024)
    share = rng.uniform(0.2, 0.8)
    wait_until(lambda: part_bytes(agent) >= share * RELEASE_BYTES, 60, f"{share:.0%} of the download")
    agent.kill()
    agent.artifact_proxy.clear()
    return read_state(agent.data_dir) or "unknown", {"share_downloaded": round(part_bytes(agent) / RELEASE_BYTES, 2)}


def kill_mid_install(agent: FleetAgent, rng: random.Random) -> tuple[str, dict]:
    """Kill a random instant into the installation (slot copy, verification, renames)."""
    delay = rng.uniform(0.0, 0.03)
    wait_until(lambda: read_state(agent.data_dir) == "installing", 60, "the installation to start", interval=0.001)
    time.sleep(delay)
    agent.kill()
    return read_state(agent.data_dir) or "unknown", {"delay_into_installing_s": round(delay, 3)}


def test_agents_killed_during_download_verification_and_installation(fleet, fault_summary) -> None:
    started = time.monotonic()
    rng = random.Random(11)
    fleet: FaultFleet = fleet()
    agents = fleet.add_agents(FLEET_SIZE, artifact_proxy=True)
    version = fleet.publish(NAME, "v-initial")
    fleet.install_everywhere(NAME, version)
    kills: list[dict] = []
    finals: dict[str, dict[str, int]] = {}
    per_round = max(1, FLEET_SIZE // 10)  # 10% of the fleet
    chosen = rng.sample(agents, per_round * len(ROUNDS))  # a different device each time

    for round_index, (point, size) in enumerate(ROUNDS):
        old, version = version, fleet.publish(NAME, f"v-{point}", size)
        victims = chosen[round_index * per_round:(round_index + 1) * per_round]
        rollout = fleet.rollout(NAME, version, agents)
        for victim in victims:
            if point == "downloading":
                died_in, detail = kill_mid_download(victim, rng)
            elif point == "verifying":
                died_in, detail = kill_at_state(victim, ("verifying",)), {}
            else:
                died_in, detail = kill_mid_install(victim, rng)
            kills.append({"aimed_at": point, "died_in": died_in, "device": victim.device_id, **detail})
            time.sleep(0.3)  # the device is off for a moment
            fleet.restart_agent(victim)

        final = fleet.wait_rollout(rollout, timeout=120)
        finals[point] = {"rollout": final["state"], **states_of(final)}
        assert finals[point] == {"rollout": "succeeded", "succeeded": FLEET_SIZE}, final["device_details"]
        counts = check_fleet(fleet, NAME, old, version, final, cli=round_index == len(ROUNDS) - 1)
        assert counts["new"] == FLEET_SIZE
        for victim in victims:
            assert read_state(victim.data_dir) == "succeeded"

    died_in = [kill["died_in"] for kill in kills]
    assert all(state in ("notified", "downloading", "verifying", "installing", "health_check", "succeeded")
               for state in died_in), kills
    assert died_in[0] == "downloading", kills

    fault_summary(ScenarioRecord(
        scenario="agents_sigkilled_mid_update", devices=len(fleet.agents), serving=counts, final_state=finals,
        faults={"kills": kills, "killed_share_per_round": per_round / FLEET_SIZE},
        duration_s=round(time.monotonic() - started, 1),
        notes="victims restarted after 0.3 s; each resumed from its persisted state (download resumed with "
              "Range, interrupted switches settled by slot recovery) and reported succeeded",
    ))
