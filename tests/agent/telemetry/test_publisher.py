"""The publisher: in order, bounded in flight, deletes only acknowledged windows, waits while
offline, starts over from the oldest window after every reconnect, republishes what was never
acknowledged, and tells the queue which windows the client still holds."""

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
    assert len(link.sent) == 2
    link.connected.set()
    publisher.on_connected()
    publisher.pump()  # after the reconnect: w1, w2 once more (the timeout has nothing to do with it)
    clock.now = 105
    publisher.pump()
    assert [payload for _, payload in link.sent] == [b"w1", b"w2", b"w1", b"w2"]


class ForgetfulLink(FakeLink):
    """A client that loses what it held when the connection drops (no session retransmission, or a
    broker that lost the session): PUBACKs for those message ids never come."""

    def drop(self) -> None:
        self.connected.clear()
        self.sent.clear()

    def acknowledge_all(self, publisher: TelemetryPublisher) -> None:
        for mid, _ in self.sent:
            publisher.on_puback(mid)
        self.sent.clear()


def test_the_backlog_drains_after_reconnects_even_if_the_client_lost_what_was_in_flight(
        queue: TelemetryQueue) -> None:
    link, clock = ForgetfulLink(), Clock()
    publisher = TelemetryPublisher(queue, link, max_inflight=4, ack_timeout_s=60, clock=clock)
    assert publisher.pump() == 4  # w1..w4 in flight
    for _ in range(3):  # the broker restarts more often than the ack timeout
        link.drop()
        clock.now += 20
        link.connected.set()
        publisher.on_connected()
        assert publisher.pump() == 4  # not stuck waiting for acks that will never come
        assert [payload for _, payload in link.sent] == [b"w1", b"w2", b"w3", b"w4"]
    while link.sent:
        link.acknowledge_all(publisher)
        publisher.pump()
    assert queue.peek(0, 100) == [] and publisher.acknowledged == 10


def test_any_copy_acknowledged_settles_the_window_once(queue: TelemetryQueue) -> None:
    link = FakeLink()
    publisher = TelemetryPublisher(queue, link, max_inflight=2)
    publisher.pump()  # w1 (mid 1), w2 (mid 2)
    link.connected.clear()
    publisher.pump()
    link.connected.set()
    publisher.on_connected()
    publisher.pump()  # w1 (mid 3), w2 (mid 4); the client retransmits mids 1 and 2 itself
    assert publisher.held() == {1, 2}
    publisher.on_puback(1)  # the old copy of w1 arrives first
    publisher.on_puback(3)  # then the new one
    publisher.pump()
    assert [seq for seq, _ in queue.peek(0, 3)] == [2, 3, 4]
    assert publisher.acknowledged == 1
    assert publisher.held() == {2, 3}  # both copies of w1 forgotten; w3 went out in the freed slot


def test_windows_in_flight_are_held_and_never_evicted(tmp_path: Path) -> None:
    store = TelemetryQueue(tmp_path / "q.db", 400)  # room for 4 windows of 100 bytes
    link = FakeLink()
    publisher = TelemetryPublisher(store, link, max_inflight=2)

    def window(seq: int, evicted: int) -> bytes:
        return f"w{seq}:{evicted}".encode().ljust(100, b".")

    for _ in range(4):
        store.append(window)
    publisher.pump()  # w1, w2 in flight
    link.connected.clear()  # an outage: more windows than fit
    for _ in range(3):
        store.append(window, held=publisher.held())
    assert [seq for seq, _ in store.peek(0, 10)] == [1, 2, 6, 7]  # 3, 4, 5 evicted; 1, 2 may still arrive
    assert store.stats().evicted_total == 3
