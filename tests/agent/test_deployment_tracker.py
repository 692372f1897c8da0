"""The deployment tracker repeats its current state on request, exactly as first sent."""

from pathlib import Path

from agent.deployment import DeploymentTracker
from agent.protocol.messages import StatusMessage
from agent.state_store import StateStore
from agent.statemachine import Event


class Recorder:
    def __init__(self) -> None:
        self.messages: list[StatusMessage] = []

    def publish_status(self, message: StatusMessage) -> None:
        self.messages.append(message)


def test_republish_repeats_the_last_status_byte_for_byte(tmp_path: Path) -> None:
    sent = Recorder()
    tracker = DeploymentTracker("dev-1", StateStore(tmp_path), sent)
    tracker.republish()
    assert sent.messages == []  # nothing to repeat before the first directive

    tracker.begin(7, action="install", release_name="digits", release_version=3)
    tracker.advance(7, Event.START_DOWNLOAD)
    tracker.republish()

    assert [m.state for m in sent.messages] == ["notified", "downloading", "downloading"]
    assert sent.messages[-1].encode() == sent.messages[-2].encode()
    assert sent.messages[-1].timestamp == tracker.record.updated_at


def test_republish_after_a_restart_sends_the_persisted_state(tmp_path: Path) -> None:
    first = Recorder()
    tracker = DeploymentTracker("dev-1", StateStore(tmp_path), first)
    tracker.begin(2, action="install", release_name="digits", release_version=1)
    tracker.advance(2, Event.FAILED, "disk full")

    again = Recorder()
    DeploymentTracker("dev-1", StateStore(tmp_path), again).republish()

    assert [m.encode() for m in again.messages] == [first.messages[-1].encode()]
    assert again.messages[0].state == "failed" and again.messages[0].reason == "disk full"
