"""The fleet server is killed (SIGKILL) during a staged rollout and during heavy telemetry.

20 simulated devices send requests every 0.2 s and close a telemetry window every second (20
windows a second reach the server). The server is SIGKILLed:

1. while the first phase of a rollout runs: restarted, it continues the rollout from the state
   in its database, without notifying a device twice (one directive per device), and gets the
   reports devices sent meanwhile (the broker kept them for the server's persistent session);
2. with telemetry flowing: down for a few seconds while windows pile up at the broker, then
   killed again a moment after its restart, in the middle of ingesting that backlog: a batch
   stored but not yet acknowledged is delivered again and must not be stored twice.

Afterwards every device serves the new model and every window a device handed to the broker
is stored exactly once.
"""

from __future__ import annotations

import time

import pytest

from fleet_server.processes import wait_until
from tests.faults.fleet import FaultFleet
from tests.faults.simulated import SimDevices
from tests.faults.telemetry_ledger import settled_ledger, take_ledger
from tests.faults.toolkit.summary import ScenarioRecord

pytestmark = pytest.mark.slow

NAME = "digits-server-kills"
PER_PROCESS, PROCESSES = 10, 2
DEVICES = PER_PROCESS * PROCESSES
PHASES = [{"share": 0.5, "bake_s": 2}, {"share": 1.0, "bake_s": 0}]
RELEASE_BYTES = 64 * 1024
WINDOW_S = 1.0
HEAVY = {"EDGEFLEET_AGENT_TELEMETRY_WINDOW_S": str(WINDOW_S)}
OUTAGE_S = 4.0


def sequences(fleet: FaultFleet, ids: list[str]) -> dict[str, int]:
    return {d["device_id"]: d["directive_sequence"] for d in fleet.client.devices() if d["device_id"] in set(ids)}


def test_server_killed_during_a_rollout_and_during_heavy_telemetry(fleet, fault_summary) -> None:
    started = time.monotonic()
    fleet: FaultFleet = fleet()
    devices = SimDevices.start(fleet, "srv", PER_PROCESS, PROCESSES, traffic_interval_s=0.2, env=HEAVY)
    server_db = fleet.server.data_dir / "edgefleet.db"
    try:
        old = fleet.publish(NAME, "old", RELEASE_BYTES)
        baseline = fleet.wait_rollout(fleet.client.create_rollout({
            "release": {"name": NAME, "version": old}, "target": {"tags": ["srv"]},
            "phases": [{"share": 1.0, "bake_s": 0}]})["id"])
        assert baseline["state"] == "succeeded" and baseline["devices"] == {"succeeded": DEVICES}
        before = sequences(fleet, devices.ids)

        new = fleet.publish(NAME, "new", RELEASE_BYTES)
        rollout = fleet.client.create_rollout({
            "release": {"name": NAME, "version": new}, "target": {"tags": ["srv"]}, "phases": PHASES,
            "criteria": {"max_latency_ratio": 1000}})["id"]
        wait_until(lambda: fleet.client.rollout(rollout)["devices"].get("notified", 0) > 0, 60,
                   "the first phase to notify devices")
        at_kill = fleet.client.rollout(rollout)
        fleet.kill_server()
        time.sleep(2.0)  # devices go on installing and reporting; the broker keeps the reports
        fleet.restart_server()
        final = fleet.wait_rollout(rollout, timeout=120)
        assert final["state"] == "succeeded" and final["devices"] == {"succeeded": DEVICES}, final["devices"]
        after = sequences(fleet, devices.ids)
        assert {device_id: after[device_id] - before[device_id] for device_id in devices.ids} == \
            dict.fromkeys(devices.ids, 1)  # one directive per device: none notified twice

        windows_before_outage = take_ledger(devices.data_dirs(), server_db).count.stored
        fleet.kill_server()
        time.sleep(OUTAGE_S)  # windows pile up at the broker for the server's persistent session
        fleet.restart_server()
        time.sleep(0.5)  # ingesting the backlog
        fleet.kill_server()
        fleet.restart_server()
        counts = devices.serving(old, new)
        assert counts == {"old": 0, "new": DEVICES, "none": 0, "inconsistent": 0}, counts
        ledger = settled_ledger(devices.data_dirs(), server_db)
        assert ledger.count.lost == 0 and ledger.count.duplicates == 0, (ledger.count, ledger.missing)
        assert ledger.count.stored > windows_before_outage + DEVICES * OUTAGE_S  # the backlog arrived
    finally:
        devices.stop()

    fault_summary(ScenarioRecord(
        scenario="server_sigkilled_rollout_and_telemetry", devices=DEVICES, serving=counts,
        final_state={"rollout": final["state"], **final["devices"]}, telemetry=ledger.count,
        faults={"kills": 3, "rollout_when_killed": at_kill["devices"], "telemetry_outage_s": OUTAGE_S,
                "windows_per_s": DEVICES / WINDOW_S, "second_kill_during_backlog_ingest_after_s": 0.5},
        duration_s=round(time.monotonic() - started, 1),
        notes="the restarted server finished the rollout from its database with one directive per device; "
              "telemetry queued at the broker during the outage was stored once, including across a kill "
              "in the middle of ingesting it",
    ))
