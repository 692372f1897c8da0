"""Presence with inventory: published retained at connect, after each finished deployment
and every heartbeat interval; its offline form is the MQTT last will."""

import logging
import threading
import time
from collections.abc import Callable

import agent
from agent.deployment import DeploymentTracker
from agent.inference import InferenceService
from agent.protocol.messages import InstalledModel, PresenceMessage

log = logging.getLogger(__name__)


class PresenceReporter:
    def __init__(self, device_id: str, tracker: DeploymentTracker, service: InferenceService) -> None:
        self.device_id = device_id
        self.tracker = tracker
        self.service = service
        self.started = time.monotonic()

    def online(self) -> PresenceMessage:
        served = self.service.current()
        models = (InstalledModel(served.name, served.version, served.variant, served.sha256),) if served else ()
        return PresenceMessage(
            device_id=self.device_id,
            online=True,
            agent_version=agent.__version__,
            uptime_s=time.monotonic() - self.started,
            models=models,
            deployment_state=self.tracker.state.value,
        )



def offline_presence(device_id: str) -> PresenceMessage:
    """The retained presence of a device that went away (clean stop or last will)."""
    return PresenceMessage(device_id=device_id, online=False, agent_version=agent.__version__)


class Heartbeat:
    """Calls ``beat`` every ``interval_s`` on a daemon thread until stopped."""

    def __init__(self, interval_s: float, beat: Callable[[], None]) -> None:
        self.interval_s = interval_s
        self._beat = beat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._beat()
            except Exception:
                log.exception("event=heartbeat_failed")
