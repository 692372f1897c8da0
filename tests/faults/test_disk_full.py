"""A device's disk fills up during the download and during the installation.

Each agent's data directory is a small file system of its own (``SmallDisk``: tmpfs, else a
loop-mounted ext4 file). With the old model installed, a filler file takes all but a chosen
amount of space before the new release arrives:

- ``download_then_freed``: the download stops at the full disk and keeps retrying; space is
  freed meanwhile and the download resumes where it stopped: the device installs;
- ``download_full``: the disk stays full; after its retries the deployment fails;
- ``install_full``: the download fits, copying it into the staging slot does not; the
  deployment fails.

Every device keeps serving its old model through this, reports a final state, gives the space
it used back, and installs the release when it is deployed again after space was freed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleet_server.processes import wait_until
from tests.faults.fleet import RELEASE_BYTES, FaultFleet
from tests.faults.invariants import check_fleet, states_of
from tests.faults.toolkit.disk import SmallDisk, mount_capability
from tests.faults.toolkit.observe import read_state
from tests.faults.toolkit.summary import ScenarioRecord

pytestmark = pytest.mark.slow

NAME = "digits-disk-full"
DISK_BYTES = 24 * 1024 * 1024
KIB = 1024
LEAVE_FREE = {  # bytes left free when the new release is deployed
    "download_then_freed": 400 * KIB,
    "download_full": 400 * KIB,
    "install_full": RELEASE_BYTES + 300 * KIB,
}
GIVE_UP = {"EDGEFLEET_AGENT_DOWNLOAD_MAX_ATTEMPTS": "3"}


def part_size(data_dir: Path) -> int:
    return sum(part.stat().st_size for part in (data_dir / "downloads").glob("*.part"))


def test_disk_full_during_download_and_installation(fleet, fault_summary, tmp_path) -> None:
    if (reason := mount_capability()) is not None:
        pytest.skip(f"disk-full faults need a small file system of their own: {reason}")
    started = time.monotonic()
    fleet: FaultFleet = fleet()
    disks: dict[str, SmallDisk] = {}
    agents = {}
    try:
        for kind in LEAVE_FREE:
            disks[kind] = SmallDisk(tmp_path / f"disk-{kind}", DISK_BYTES).mount()
            agents[kind] = fleet.add_agent(data_dir=disks[kind].path, env={} if kind == "download_then_freed"
                                           else GIVE_UP)
        old = fleet.publish(NAME, "old")
        fleet.install_everywhere(NAME, old)
        new = fleet.publish(NAME, "new")
        left = {kind: disks[kind].fill(leave_free=LEAVE_FREE[kind]) for kind in LEAVE_FREE}

        rollout = fleet.rollout(NAME, new, fleet.agents, [{"share": 1.0, "bake_s": 0, "success_threshold": 0.3}],
                                criteria={"max_failure_rate": 0.7})
        freed = agents["download_then_freed"]
        wait_until(lambda: read_state(freed.data_dir) == "downloading" and part_size(freed.data_dir) > 0, 60,
                   "the download to start on the nearly full disk")
        stuck_at = part_size(freed.data_dir)
        time.sleep(1.5)  # retries against the full disk make no progress
        assert part_size(freed.data_dir) == stuck_at and read_state(freed.data_dir) == "downloading"
        disks["download_then_freed"].unfill()
        final = fleet.wait_rollout(rollout, timeout=120)

        assert final["state"] == "succeeded", final
        devices = {device["device_id"]: device for device in final["device_details"]}
        assert devices[freed.device_id]["status"] == "succeeded", devices[freed.device_id]
        for kind in ("download_full", "install_full"):
            device = devices[agents[kind].device_id]
            assert (device["status"], device["agent_state"]) == ("failed", "failed"), (kind, device)
            assert "No space left on device" in (device["reason"] or ""), (kind, device)
        during = check_fleet(fleet, NAME, old, new, final)
        assert during == {"old": 2, "new": 1, "none": 0, "inconsistent": 0}
        for kind in ("download_full", "install_full"):  # the failed attempt gave its space back
            data_dir = agents[kind].data_dir
            assert part_size(data_dir) == 0 and not (data_dir / "slots" / "staging").exists(), kind

        for kind in ("download_full", "install_full"):
            disks[kind].unfill()
        retried = [agents["download_full"], agents["install_full"]]
        again = fleet.roll_out(NAME, new, retried)
        assert again["state"] == "succeeded" and states_of(again) == {"succeeded": 2}
        counts = check_fleet(fleet, NAME, old, new, again, cli=True)
        assert counts["new"] == len(fleet.agents)
        mechanism = disks["download_full"].mechanism
    finally:
        for agent in fleet.agents:
            agent.stop()
            log = agent.data_dir / "agent.log"
            if log.exists():  # keep the log after the file system is gone
                (tmp_path / f"{agent.device_id}.log").write_bytes(log.read_bytes())
        for disk in disks.values():
            disk.unmount()

    fault_summary(ScenarioRecord(
        scenario="disk_full", devices=len(fleet.agents), serving=counts,
        final_state={"rollout_while_full": {"state": final["state"], **states_of(final)},
                     "rollout_after_space_freed": {"state": again["state"], **states_of(again)}},
        faults={"file_system": mechanism, "free_bytes_at_deploy": left, "download_stuck_at_bytes": stuck_at},
        duration_s=round(time.monotonic() - started, 1),
        notes="download_then_freed resumed once space was freed and installed; download_full and install_full "
              "failed with ENOSPC while serving the old model, gave the space back, and installed on redeploy",
    ))
