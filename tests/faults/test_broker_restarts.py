"""The broker is restarted twice during a staged rollout to 50 devices.

50 simulated devices (two simulator processes, each device with its own MQTT connection and
data directory) serve a baseline and answer requests all along, so telemetry windows flow the
whole time. A rollout with phases of 10%, 50% and 100% starts; the broker (persistence on) is
restarted once while the first phase runs and once while a later one runs, each time down for
a moment. Sessions, queued messages and retained directives survive the restarts; devices
and the server reconnect by themselves.

The rollout must succeed on all 50 devices, each serving the new model (its slot and what its
inference service reports agree), every telemetry window a device handed to the broker must be
stored exactly once, and telemetry must flow again after the restarts: every device gets a window
stored that started after the second restart (however fast the rollout went).

The server subscribes plainly (``EDGEFLEET_MQTT_SHARED_SUBSCRIPTION=false``), as one server on
Mosquitto should: Mosquitto 2.0 restores a persistent session's plain subscriptions after a
restart but not its ``$share`` ones, so with ``$share`` whatever devices publish between the
broker's restart and the server's re-subscription is dropped by the broker (statuses, which the
agents repeat at every reconnect and heartbeat, recover; telemetry windows do not). See the
README's Reliability section.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from fleet_server.processes import wait_until
from tests.faults.fleet import FaultFleet
from tests.faults.simulated import SimDevices
from tests.faults.telemetry_ledger import settled_ledger, wait_for_windows_since
from tests.faults.toolkit.summary import ScenarioRecord

pytestmark = pytest.mark.slow

NAME = "digits-broker-restarts"
PER_PROCESS, PROCESSES = 25, 2
DEVICES = PER_PROCESS * PROCESSES
PHASES = [{"share": 0.1, "bake_s": 1}, {"share": 0.5, "bake_s": 1}, {"share": 1.0, "bake_s": 0}]
RELEASE_BYTES = 64 * 1024
DOWN_S = 1.5
FLOWING_AGAIN_S = 120  # bound on a window after the last restart being stored for every device


def test_broker_restarted_twice_during_a_rollout_of_50_devices(fleet, fault_summary) -> None:
    started = time.monotonic()
    fleet: FaultFleet = fleet(EDGEFLEET_MQTT_SHARED_SUBSCRIPTION="false")
    devices = SimDevices.start(fleet, "brk", PER_PROCESS, PROCESSES, traffic_interval_s=1.0,
                               env={"EDGEFLEET_AGENT_TELEMETRY_WINDOW_S": "4"})
    try:
        old = fleet.publish(NAME, "old", RELEASE_BYTES)
        baseline = fleet.wait_rollout(fleet.client.create_rollout({
            "release": {"name": NAME, "version": old}, "target": {"tags": ["brk"]},
            "phases": [{"share": 1.0, "bake_s": 0}]})["id"], timeout=300)
        assert baseline["state"] == "succeeded" and baseline["devices"] == {"succeeded": DEVICES}
        new = fleet.publish(NAME, "new", RELEASE_BYTES)
        rollout = fleet.client.create_rollout({
            "release": {"name": NAME, "version": new}, "target": {"tags": ["brk"]}, "phases": PHASES,
            "criteria": {"max_latency_ratio": 1000}, "device_timeout_s": 180, "retry_backoff_s": 2})["id"]

        restarts = []
        for phase in (0, 1):
            wait_until(lambda p=phase: (r := fleet.client.rollout(rollout))["current_phase"] >= p
                       and r["devices"].get("notified", 0) + r["devices"].get("succeeded", 0) > 0, 240,
                       f"phase {phase + 1} to notify devices")
            seen = fleet.client.rollout(rollout)
            fleet.broker.stop()
            time.sleep(DOWN_S)
            fleet.broker.start()
            last_restart = datetime.now(UTC)
            restarts.append({"phase": seen["current_phase"] + 1, "devices_then": seen["devices"]})
        final = fleet.wait_rollout(rollout, timeout=300)

        assert final["state"] == "succeeded", final
        assert final["devices"] == {"succeeded": DEVICES}, final["devices"]
        phases = final["phase_details"]
        assert [phase["state"] for phase in phases] == ["completed"] * 3
        assert all(datetime.fromisoformat(a["completed_at"]) <= datetime.fromisoformat(b["started_at"])
                   for a, b in zip(phases, phases[1:], strict=False))
        counts = devices.serving(old, new)
        assert counts == {"old": 0, "new": DEVICES, "none": 0, "inconsistent": 0}, counts
        server_db = fleet.server.data_dir / "edgefleet.db"
        wait_for_windows_since(server_db, devices.ids, last_restart, FLOWING_AGAIN_S)  # no publisher stalled
        ledger = settled_ledger(devices.data_dirs(), server_db)
        assert ledger.count.lost == 0 and ledger.count.duplicates == 0, (ledger.count, ledger.missing)
    finally:
        devices.stop()

    fault_summary(ScenarioRecord(
        scenario="broker_restarted_twice_50_devices", devices=DEVICES, serving=counts,
        final_state={"rollout": final["state"], **final["devices"]}, telemetry=ledger.count,
        faults={"broker_restarts": restarts, "broker_down_s": DOWN_S, "phases": PHASES,
                "server_subscription": "plain (Mosquitto does not restore $share subscriptions after a restart)"},
        duration_s=round(time.monotonic() - started, 1),
        notes="graceful broker restarts (SIGTERM: mosquitto saves its persistence file); the rollout went on "
              "through both and every acknowledged telemetry window was stored once",
    ))
