"""Many devices for a fault scenario: ``edgefleet-agent simulate`` processes (``SimulatedFleet``).

Each simulated device is a real agent daemon with its own data directory and MQTT connection,
without a KServe endpoint; the simulator sends every device requests through its in-process
inference API, so devices produce telemetry windows. What a device serves is read twice: its
data directory's status report (the current slot, as ``edgefleet-agent status`` prints it) and
the model its inference service reports serving (its presence, on the server).
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from agent.status import status_report
from fleet_server.processes import WaitTimeoutError, wait_until
from tests.faults.fleet import FAST_RETRIES, PARALLEL, FaultFleet
from tests.faults.toolkit.observe import agent_status
from tests.integration.conftest import MODELS
from tests.integration.simulated_fleet import SimulatedFleet

SIM_ENV = {**FAST_RETRIES, "EDGEFLEET_AGENT_TELEMETRY_WINDOW_S": "1"}
CLI_SAMPLE = 5  # devices whose status is also asked through the edgefleet-agent command


@dataclass
class SimDevices:
    fleet: FaultFleet
    sims: SimulatedFleet
    root: Path

    @classmethod
    def start(cls, fleet: FaultFleet, prefix: str, per_process: int, processes: int,
              traffic_interval_s: float = 0.5, env: dict[str, str] | None = None) -> SimDevices:
        assert fleet.server is not None
        root = fleet.root / f"sim-{prefix}"
        sims = SimulatedFleet(fleet.server, root, prefix, per_process, processes, tag=prefix,
                              traffic=MODELS / "digits_sample.npy", env={**SIM_ENV, **(env or {})},
                              extra_args=("--traffic-interval", str(traffic_interval_s)))
        devices = cls(fleet, sims, root)
        sims.start()
        return devices

    @property
    def ids(self) -> list[str]:
        return self.sims.device_ids

    def data_dir(self, device_id: str) -> Path:
        return self.root / "devices" / device_id

    def data_dirs(self) -> dict[str, Path]:
        return {device_id: self.data_dir(device_id) for device_id in self.ids}

    def stop(self) -> None:
        self.sims.stop()

    def slot_versions(self, cli_sample: int = 0) -> dict[str, int | None]:
        """The current slot's version per device; ``cli_sample`` devices asked through the command too."""
        def version(report: dict) -> int | None:
            return (report.get("current") or {}).get("version")

        versions = {device_id: version(status_report(path)) for device_id, path in self.data_dirs().items()}
        sample = random.Random(7).sample(self.ids, min(cli_sample, len(self.ids)))
        with ThreadPoolExecutor(PARALLEL) as pool:
            for device_id, report in zip(sample, pool.map(lambda d: agent_status(self.data_dir(d)), sample),
                                         strict=True):
                assert version(report) == versions[device_id], (device_id, report)
        return versions

    def served_versions(self) -> dict[str, int | None]:
        """The version each device's inference service reports serving (presence)."""
        return {device["device_id"]: (device["current_model"] or {}).get("version")
                for device in self.fleet.client.devices() if device["device_id"] in set(self.ids)}

    def serving(self, old_version: int | None, new_version: int, timeout: float = 30.0) -> dict[str, int]:
        """Devices on old/new/none/inconsistent, once slots and served models agree (or ``timeout``)."""
        def tally() -> dict[str, int]:
            slots, served = self.slot_versions(), self.served_versions()
            counts = {"old": 0, "new": 0, "none": 0, "inconsistent": 0}
            for device_id in self.ids:
                slot, answer = slots[device_id], served.get(device_id)
                key = ("inconsistent" if slot != answer else "none" if slot is None
                       else "new" if slot == new_version else "old" if slot == old_version else "inconsistent")
                counts[key] += 1
            return counts

        try:
            counts = wait_until(lambda: (c := tally())["inconsistent"] == 0 and c, timeout,
                                "slots and served models to agree")
        except WaitTimeoutError:
            counts = tally()
        self.slot_versions(cli_sample=CLI_SAMPLE)
        return counts
