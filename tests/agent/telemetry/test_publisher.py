"""The publisher: in order, bounded in flight, deletes only acknowledged windows, waits while
offline, republishes what was never acknowledged."""

import itertools
import threading
from pathlib import Path

import pytest

from agent.telemetry.publisher import TelemetryPublisher
from agent.telemetry.queue import TelemetryQueue


class FakeLink:
    def __init__(self) -> None:
        self.connected = threading.Event()
        self.connected.set()
        self.sent: list[tuple[int, bytes]] = []
        self._mids = itertools.count(1)
        self.accept = True

    def publish_telemetry(self, payload: bytes) -> tuple[bool, int]:
        if not self.accept:
            return False, 0
        mid = next(self._mids)
        self.sent.append((mid, payload))
        return True, mid


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def queue(tmp_path: Path) -> TelemetryQueue:
    store = TelemetryQueue(tmp_path / "q.db", 1_000_000)
    for _ in range(10):
        store.append(lambda seq, evicted: f"w{seq}".encode())
    return store


def test_windows_go_out_in_order_within_the_inflight_bound(queue: TelemetryQueue) -> None:
    link = FakeLink()
    publisher = TelemetryPublisher(queue, link, max_inflight=4)
    assert publisher.pump() == 4
    assert publisher.pump() == 0  # nothing acknowledged yet
    for mid, _ in link.sent[:2]:
        publisher.on_puback(mid)
    assert publisher.pump() == 2
    assert [payload for _, payload in link.sent] == [f"w{i}".encode() for i in range(1, 7)]
    assert [seq for seq, _ in queue.peek(0, 100)] == list(range(3, 11))


def test_only_acknowledged_windows_are_deleted_and_unknown_acks_are_ignored(queue: TelemetryQueue) -> None:
    link = FakeLink()
    publisher = TelemetryPublisher(queue, link, max_inflight=10)
    publisher.pump()
    publisher.on_puback(link.sent[4][0])
    publisher.on_puback(999)
    publisher.pump()
    assert [seq for seq, _ in queue.peek(0, 100)] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert publisher.acknowledged == 1


def test_nothing_is_published_while_offline(queue: TelemetryQueue) -> None:
    link = FakeLink()
    link.connected.clear()
    publisher = TelemetryPublisher(queue, link)
    assert publisher.pump() == 0 and link.sent == []
    link.connected.set()
    publisher.on_connected()
    assert publisher.pump() == 10


def test_a_refused_publish_is_retried_later(queue: TelemetryQueue) -> None:
    link = FakeLink()
    link.accept = False
    publisher = TelemetryPublisher(queue, link)
    assert publisher.pump() == 0
    link.accept = True
    assert publisher.pump() == 10
    assert [payload for _, payload in link.sent][0] == b"w1"


def test_unacknowledged_windows_are_republished_from_the_oldest(queue: TelemetryQueue) -> None:
    link, clock = FakeLink(), Clock()
    publisher = TelemetryPublisher(queue, link, max_inflight=3, ack_timeout_s=10, clock=clock)
    publisher.pump()  # w1..w3
    publisher.on_puback(link.sent[0][0])  # w1 acknowledged; w2, w3 lost
    clock.now = 5
    publisher.pump()  # w4 (one slot free)
    clock.now = 11
    publisher.pump()  # w2, w3 timed out: republish from w2 in order
    assert [payload for _, payload in link.sent] == [b"w1", b"w2", b"w3", b"w4", b"w2", b"w3", b"w4"]
    assert publisher.republished == 2


def test_time_offline_does_not_count_towards_the_timeout(queue: TelemetryQueue) -> None:
    link, clock = FakeLink(), Clock()
    publisher = TelemetryPublisher(queue, link, max_inflight=2, ack_timeout_s=10, clock=clock)
    publisher.pump()
    link.connected.clear()
    clock.now = 100
    publisher.pump()
    link.connected.set()
    publisher.on_connected()  # paho retransmits what it holds after a reconnect
    clock.now = 105
    publisher.pump()
    assert len(link.sent) == 2 and publisher.republished == 0
