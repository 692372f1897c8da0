"""Many device agents in one process: ``edgefleet-agent simulate``.

Each simulated device is a real ``AgentDaemon`` (enrollment, its own data
directory, MQTT connection, updater and state machine, resumable downloads,
model slots, health checks, shadow runner and telemetry) minus its KServe
endpoint. What they share is what only costs resources when duplicated:
one network thread drives every MQTT connection (``SharedNetworkLoop``,
epoll), and one small pool of traffic threads sends each device a request
through its in-process inference API every ``traffic_interval_s`` (rows of
a ``.npy`` file, cycled), so telemetry and health gates see real traffic.

paho keeps one socket per client; a few hundred devices per process is the
practical limit, so a large fleet is several simulator processes with
disjoint ``start_index`` ranges.
"""

import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import agent
from agent.config import AgentConfig, load_config
from agent.daemon import AgentDaemon
from agent.enroll import ENROLLMENT_FILE, enroll
from agent.errors import AgentError, InferenceError
from agent.facts import device_facts
from agent.mqtt_loop import SharedNetworkLoop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulatorSettings:
    count: int
    data_root: Path
    server_url: str
    token: str  # the bootstrap token devices enroll with
    prefix: str = "sim"
    start_index: int = 0
    tags: tuple[str, ...] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)  # AgentConfig fields for every device
    config_path: Path | None = None  # a TOML config file every device reads
    traffic: Path | None = None  # .npy of input rows; None: no traffic
    traffic_interval_s: float = 1.0  # per device
    traffic_batch: int = 1
    traffic_workers: int = 4
    enroll_workers: int = 8

    def device_id(self, index: int) -> str:
        return f"{self.prefix}-{self.start_index + index:04d}"


class Simulator:
    def __init__(self, settings: SimulatorSettings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.env = os.environ if env is None else env
        self.network = SharedNetworkLoop()
        self.daemons: list[AgentDaemon] = []
        self._rows: np.ndarray | None = np.load(settings.traffic) if settings.traffic is not None else None
        self._stop = threading.Event()
        self._traffic: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._counts_lock = threading.Lock()
        self.requests = 0
        self.errors = 0

    def config_for(self, device_id: str) -> AgentConfig:
        overrides = {**self.settings.overrides, "data_dir": self.settings.data_root / device_id,
                     "device_id": device_id}
        return load_config(self.settings.config_path, env=self.env, overrides=overrides)

    # -- lifecycle ---------------------------------------------------------------------------------

    def enroll_missing(self) -> list[str]:
        """Enroll every device without an enrollment yet; return all device ids."""
        ids = [self.settings.device_id(index) for index in range(self.settings.count)]
        missing = [d for d in ids if not (self.settings.data_root / d / ENROLLMENT_FILE).exists()]

        def enroll_one(device_id: str) -> None:
            config = self.config_for(device_id)
            enroll(self.settings.server_url, self.settings.token, device_facts(device_id, config),
                   self.settings.tags or config.tags, agent.__version__, Path(config.data_dir))

        with ThreadPoolExecutor(max_workers=self.settings.enroll_workers) as pool:
            for future in [pool.submit(enroll_one, device_id) for device_id in missing]:
                future.result()
        log.info("event=simulator_enrolled new=%d total=%d", len(missing), len(ids))
        return ids

    def start(self) -> list[str]:
        ids = self.enroll_missing()
        self.network.start()
        for device_id in ids:
            daemon = AgentDaemon(self.config_for(device_id), network=self.network, serve_http=False)
            daemon.start()
            self.daemons.append(daemon)
        if self._rows is not None:
            self._pool = ThreadPoolExecutor(max_workers=self.settings.traffic_workers,
                                            thread_name_prefix="sim-traffic")
            self._traffic = threading.Thread(target=self._drive_traffic, name="sim-traffic-clock", daemon=True)
            self._traffic.start()
        log.info("event=simulator_started devices=%d", len(self.daemons))
        return ids

    def stop(self) -> None:
        self._stop.set()
        if self._traffic is not None:
            self._traffic.join(10)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for daemon in self.daemons:
            try:
                daemon.stop()
            except AgentError as exc:
                log.warning("event=simulator_stop_failed device=%s error=%r", daemon.facts.device_id, str(exc))
        self.network.stop()
        log.info("event=simulator_stopped devices=%d requests=%d errors=%d", len(self.daemons), self.requests,
                 self.errors)

    def run_until(self, stop: threading.Event) -> None:
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()

    # -- traffic -----------------------------------------------------------------------------------

    def _drive_traffic(self) -> None:
        """Every device asks once per interval, spread evenly over the interval."""
        assert self._pool is not None
        interval = self.settings.traffic_interval_s
        gap = interval / max(1, len(self.daemons))
        cursor = random.randrange(len(self._rows)) if self._rows is not None and len(self._rows) else 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            for daemon in self.daemons:
                next_at += gap
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                self._pool.submit(self._ask, daemon, cursor)
                cursor += self.settings.traffic_batch

    def _ask(self, daemon: AgentDaemon, cursor: int) -> None:
        served = daemon.service.current()
        if served is None or self._rows is None or not served.inputs:
            return
        spec = served.inputs[0]
        indices = np.arange(cursor, cursor + self.settings.traffic_batch) % len(self._rows)
        batch = np.asarray(self._rows[indices], dtype=np.dtype(spec.dtype))
        failed = False
        try:
            daemon.service.predict({spec.name: batch})
        except InferenceError as exc:  # counted by the device's telemetry, as on a real device
            failed = True
            log.debug("event=simulated_request_failed device=%s error=%r", daemon.facts.device_id, str(exc))
        with self._counts_lock:
            self.requests += 1
            self.errors += failed
