"""The writer thread behind the MQTT bridge's status and telemetry ingest: batches in arrival order,
every queued item handled before ``stop`` returns, and a failing batch never ends the thread."""

import threading

import pytest

from fleet_server.mqtt.batch_queue import BatchWriter


class Recorder(BatchWriter[int]):
    name = "test"

    def __init__(self, batch_size: int, fail_on: int | None = None) -> None:
        super().__init__(batch_size, max_pending=100)
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.gate = threading.Event()

    def process(self, batch: list[int]) -> None:
        self.gate.wait(10)
        self.batches.append(batch)
        if self.fail_on in batch:
            raise RuntimeError("the database refused it")


def test_items_queued_while_a_batch_is_stored_come_in_later_batches_in_order() -> None:
    writer = Recorder(batch_size=3)
    writer.start()
    writer.put(0)  # taken at once: the writer waits in process() until the gate opens
    for item in range(1, 8):
        writer.put(item)
    writer.gate.set()
    assert writer.flush(10)
    writer.stop()
    assert [item for batch in writer.batches for item in batch] == list(range(8))
    assert all(len(batch) <= 3 for batch in writer.batches) and len(writer.batches) >= 3
    assert writer.pending == 0


def test_a_failing_batch_is_logged_and_the_writer_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    writer = Recorder(batch_size=1, fail_on=1)
    writer.gate.set()
    writer.start()
    for item in range(3):
        writer.put(item)
    assert writer.flush(10)
    writer.stop()
    assert writer.batches == [[0], [1], [2]]
    assert "server event=test_batch_failed size=1" in caplog.text


def test_stop_stores_what_was_queued_before_it() -> None:
    writer = Recorder(batch_size=10)
    writer.gate.set()
    for item in range(5):
        writer.put(item)
    writer.start()
    writer.stop()
    assert [item for batch in writer.batches for item in batch] == list(range(5))
