"""The agent's update machinery assembled over a data directory, minus MQTT.

A fake publisher records the status messages; a real local artifact server
serves real model files; directives are really signed. Building a second rig
over the same data directory is what a restart looks like to the agent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from agent.deployment import DeploymentTracker
from agent.download import Downloader, DownloadSettings
from agent.inference import InferenceService
from agent.protocol.messages import StatusMessage
from agent.runner import DeploymentRunner
from agent.slots import SlotStore
from agent.state_store import StateStore
from agent.updater import Updater
from tests.agent.artifact_server import ArtifactServer
from tests.agent.signing import MiniFleet

FAST_DOWNLOADS = DownloadSettings(stall_timeout_s=1.0, retry_base_s=0.01, retry_max_s=0.05, max_attempts=0)


@dataclass
class FakePublisher:
    messages: list[StatusMessage] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def publish_status(self, message: StatusMessage) -> None:
        with self.changed:
            self.messages.append(message)
            self.changed.notify_all()

    def states(self, sequence: int | None = None) -> list[str]:
        return [m.state for m in self.messages if sequence is None or m.sequence == sequence]

    def last(self, sequence: int) -> StatusMessage:
        return [m for m in self.messages if m.sequence == sequence][-1]

    def wait_for(self, sequence: int, state: str, timeout: float = 30.0) -> StatusMessage:
        with self.changed:
            found = self.changed.wait_for(
                lambda: any(m.sequence == sequence and m.state == state for m in self.messages), timeout)
        assert found, f"no {state} for directive {sequence}; saw {[(m.sequence, m.state) for m in self.messages]}"
        return self.last(sequence)


@dataclass
class Rig:
    fleet: MiniFleet
    server: ArtifactServer
    data_dir: Path
    publisher: FakePublisher
    tracker: DeploymentTracker
    slots: SlotStore
    service: InferenceService
    downloader: Downloader
    runner: DeploymentRunner
    updater: Updater

    def deploy(self, payload: bytes) -> None:
        """Accept and run one directive message to its end on this thread."""
        self.updater.accept(payload)
        self.updater.run_pending()


def make_rig(fleet: MiniFleet, server: ArtifactServer, data_dir: Path, latency_bound_ms: float = 5000,
             runtimes: tuple[str, ...] = ("onnxruntime", "tflite"),
             settings: DownloadSettings = FAST_DOWNLOADS) -> Rig:
    publisher = FakePublisher()
    tracker = DeploymentTracker(fleet.device_id, StateStore(data_dir), publisher)
    slots = SlotStore(data_dir / "slots")
    service = InferenceService()
    downloader = Downloader(server.url, server.token, data_dir / "downloads", settings)
    runner = DeploymentRunner(tracker, slots, downloader, service, latency_bound_ms)
    updater = Updater(fleet.facts(runtimes), fleet.root, tracker, slots, runner)
    return Rig(fleet, server, data_dir, publisher, tracker, slots, service, downloader, runner, updater)
