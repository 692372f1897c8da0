"""The bounded hand-off between the MQTT consumer's I/O thread and a writer thread that stores messages in batches.

The I/O thread puts each message (with its acknowledgement) and blocks while the
queue is full, which stops reading from the socket and lets the broker hold the
backlog. The writer takes what is queued, up to a batch, without waiting for
more: under load batches grow by themselves, when idle a message is stored at
once. ``None`` is the stop marker (``close``). Used by the telemetry ingest and
the status/presence writer.
"""

import queue
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class BatchQueue(Generic[T]):
    def __init__(self, max_pending: int) -> None:
        self._queue: queue.Queue[T | None] = queue.Queue(max_pending)

    def put(self, item: T) -> None:
        """Queue one item (the consumer's I/O thread); blocks while the queue is full."""
        self._queue.put(item)

    def close(self, timeout: float) -> None:
        """Queue the stop marker: the writer ends after what was queued before it."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass

    def take(self, limit: int, block: bool) -> tuple[list[T], bool]:
        """Up to ``limit`` queued items (waiting for the first one when ``block``), and whether
        the stop marker came. Call ``done`` with the number taken once they are handled."""
        batch: list[T] = []
        while len(batch) < limit:
            try:
                item = self._queue.get() if block and not batch else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.task_done()
                return batch, True
            batch.append(item)
        return batch, False

    def done(self, count: int) -> None:
        for _ in range(count):
            self._queue.task_done()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything queued so far has been taken and handled; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True
