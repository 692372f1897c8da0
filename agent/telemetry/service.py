"""The agent's telemetry: windows of the accumulator's counts, stored in the queue and published.

One thread closes a window every ``window_s`` seconds, or as soon as it
counted ``max_inferences`` requests (0: no such limit), or when another model
starts answering; it adds the system metrics and the number of windows the
queue evicted, stores the encoded window, and pumps the publisher. Windows
are produced while the broker is unreachable too: they wait in the queue.
On stop, the running (partial) window is stored, to be sent after the next
start.
"""

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent.inference import InferenceService
from agent.protocol.telemetry import TelemetryWindow
from agent.telemetry.accumulator import ProfileLookup, TelemetryAccumulator, WindowReport
from agent.telemetry.publisher import TelemetryLink, TelemetryPublisher
from agent.telemetry.queue import TelemetryQueue
from agent.telemetry.system import SystemSampler

log = logging.getLogger(__name__)

PUMP_INTERVAL_S = 1.0
QUEUE_FILE = Path("telemetry") / "queue.db"


@dataclass(frozen=True)
class TelemetrySettings:
    window_s: float = 60.0
    max_inferences: int = 0
    queue_max_bytes: int = 8 * 1024 * 1024


class TelemetryService:
    def __init__(self, device_id: str, data_dir: Path, link: TelemetryLink, service: InferenceService,
                 profiles: ProfileLookup, settings: TelemetrySettings) -> None:
        self.device_id = device_id
        self.settings = settings
        self.service = service
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.queue = TelemetryQueue(Path(data_dir) / QUEUE_FILE, settings.queue_max_bytes)
        self.accumulator = TelemetryAccumulator(profiles, settings.max_inferences, on_full=self._wake.set)
        self.publisher = TelemetryPublisher(self.queue, link)
        self.system = SystemSampler(Path(data_dir))
        service.add_observer(self.accumulator)

    # -- hooks for the MQTT link (its network thread) -------------------------------

    def on_puback(self, mid: int) -> None:
        self.publisher.on_puback(mid)
        self._wake.set()

    def on_connected(self) -> None:
        self.publisher.on_connected()
        self._wake.set()

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self.accumulator.watch(self.service.current())
        self._thread = threading.Thread(target=self._loop, name="telemetry", daemon=True)
        self._thread.start()
        log.info("event=telemetry_started window_s=%s max_inferences=%d queue_bytes=%d queued=%d",
                 self.settings.window_s, self.settings.max_inferences, self.settings.queue_max_bytes,
                 self.queue.stats().windows)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        try:
            self._store_all(self.accumulator.drain(close_current=True))
        finally:
            self.queue.close()
        log.info("event=telemetry_stopped acknowledged=%d", self.publisher.acknowledged)

    def _loop(self) -> None:
        next_close = time.monotonic() + self.settings.window_s
        while not self._stopping.is_set():
            self._wake.wait(max(0.0, min(PUMP_INTERVAL_S, next_close - time.monotonic())))
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                now = time.monotonic()
                self.accumulator.watch(self.service.current())
                limit = self.settings.max_inferences
                close = now >= next_close or bool(limit and self.accumulator.requests >= limit)
                if close:
                    next_close = now + self.settings.window_s
                self._store_all(self.accumulator.drain(close_current=close))
                self.publisher.pump()
            except Exception:  # a full disk or a broken queue must not end telemetry for good
                log.exception("event=telemetry_cycle_failed")
                self._stopping.wait(PUMP_INTERVAL_S)

    def close_window(self) -> None:
        """Close the running window now (tests, shutdown hooks)."""
        self._store_all(self.accumulator.drain(close_current=True))
        self._wake.set()

    def _store_all(self, reports: list[WindowReport]) -> None:
        for report in reports:
            self._store(report)

    def _store(self, report: WindowReport) -> None:
        system = self.system.sample()

        def build(seq: int, evicted: int) -> bytes:
            return TelemetryWindow(
                device_id=self.device_id, seq=seq, start=report.start, end=report.end, model=report.model,
                requests=report.requests, errors=report.errors, latency_ms=report.latency_ms,
                features=report.features, predictions=report.predictions, quality=report.quality, system=system,
                evicted=evicted, shadow=report.shadow,
            ).encode()

        seq = self.queue.append(build, held=self.publisher.held())
        log.debug("event=telemetry_window seq=%d requests=%d errors=%d", seq, report.requests, report.errors)
