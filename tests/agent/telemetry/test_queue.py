"""The store-and-forward queue: order, persistence, the byte bound with counted oldest-first eviction."""

import threading
from pathlib import Path

import pytest

from agent.errors import TelemetryQueueError
from agent.telemetry.queue import TelemetryQueue


def payload(seq: int, evicted: int, size: int = 100) -> bytes:
    return f"{seq}:{evicted}:".encode().ljust(size, b".")


def test_windows_get_increasing_sequences_and_are_read_in_order(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "q.db", 10_000)
    assert [queue.append(payload) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert [seq for seq, _ in queue.peek(0, 10)] == [1, 2, 3, 4, 5]
    assert [seq for seq, _ in queue.peek(2, 2)] == [3, 4]
    queue.delete([1, 3])
    assert [seq for seq, _ in queue.peek(0, 10)] == [2, 4, 5]
    assert queue.stats().windows == 3 and queue.stats().bytes == 300


def test_the_queue_and_its_sequence_survive_a_restart(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "q.db", 10_000)
    for _ in range(3):
        queue.append(payload)
    queue.delete([1])
    queue.close()
    reopened = TelemetryQueue(tmp_path / "q.db", 10_000)
    assert [seq for seq, _ in reopened.peek(0, 10)] == [2, 3]
    assert reopened.append(payload) == 4


def test_the_bound_evicts_oldest_first_and_the_next_window_reports_it(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "q.db", 1_000)  # room for 10 windows of 100 bytes
    for _ in range(10):
        queue.append(payload)
    assert queue.stats().evicted_total == 0
    queue.append(payload)  # 11th: seq 1 goes
    queue.append(payload)  # 12th: seq 2 goes
    stored = queue.peek(0, 100)
    assert [seq for seq, _ in stored] == list(range(3, 13))
    reported = {seq: int(data.split(b":")[1]) for seq, data in stored}
    assert reported[11] == 0 and reported[12] == 1  # window 12 reports the eviction its predecessor caused
    queue.append(payload)  # seq 13 reports the eviction caused by 12, and evicts seq 3
    assert int(queue.peek(12, 1)[0][1].split(b":")[1]) == 1
    assert queue.stats().evicted_total == 3
    assert queue.stats().bytes <= 1_000


def test_windows_the_client_holds_are_not_evicted_so_every_eviction_is_a_window_that_never_left(
        tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "q.db", 1_000)
    for _ in range(10):
        queue.append(payload)
    queue.append(payload, held={1, 2})  # 1 and 2 are in flight: 3 goes instead
    queue.append(payload, held={1, 2})  # and then 4
    assert [seq for seq, _ in queue.peek(0, 3)] == [1, 2, 5]
    assert queue.stats().evicted_total == 2
    queue.append(payload, held=set(range(1, 13)))  # everything held: the bound gives way, nothing is evicted
    assert queue.stats().evicted_total == 2 and queue.stats().windows == 11
    queue.delete([1, 2])  # acknowledged: 5..13 left, room for one more
    queue.append(payload)
    queue.append(payload)  # the oldest goes again: 5
    assert [seq for seq, _ in queue.peek(0, 2)] == [6, 7] and queue.stats().evicted_total == 3
    assert queue.stats().bytes <= 1_000


def test_a_window_larger_than_the_bound_replaces_everything_but_is_kept(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "q.db", 250)
    queue.append(payload)
    queue.append(payload)
    seq = queue.append(lambda s, e: payload(s, e, size=400))
    assert [s for s, _ in queue.peek(0, 10)] == [seq]
    assert queue.stats().evicted_total == 2


def test_a_failing_builder_changes_nothing(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "q.db", 1_000)
    queue.append(payload)

    def broken(seq: int, evicted: int) -> bytes:
        raise ValueError("boom")

    with pytest.raises(ValueError):
        queue.append(broken)
    assert queue.append(payload) == 2


def test_concurrent_appends_and_deletes(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "q.db", 1_000_000)

    def produce() -> None:
        for _ in range(50):
            queue.append(payload)

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seqs = [seq for seq, _ in queue.peek(0, 1000)]
    assert seqs == list(range(1, 201))


def test_an_unusable_path_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(TelemetryQueueError):
        TelemetryQueue(tmp_path / "file" / "q.db", 1_000)
    with pytest.raises(TelemetryQueueError):
        TelemetryQueue(tmp_path / "q.db", 0)
