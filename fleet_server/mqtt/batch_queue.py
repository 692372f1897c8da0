"""The bounded hand-off between the MQTT consumer's I/O thread and a writer thread that stores messages in
batches (``BatchQueue``), and that writer thread's life (``BatchWriter``).

The I/O thread puts each message (with its acknowledgement) and blocks while the
queue is full, which stops reading from the socket and lets the broker hold the
backlog. The writer takes what is queued, up to a batch, without waiting for
more: under load batches grow by themselves, when idle a message is stored at
once. ``None`` is the stop marker (``close``). Used by the telemetry ingest and
the status/presence writer.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

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


class BatchWriter(Generic[T]):
    """A writer thread storing what its ``BatchQueue`` holds, a batch (up to ``batch_size``) at a time,
    with ``process``; the I/O thread queues with ``put``."""

    name = "writer"  # the thread is edgefleet-<name>-writer; log lines say <name>_batch_failed

    def __init__(self, batch_size: int, max_pending: int) -> None:
        self.batch_size = batch_size
        self._queue: BatchQueue[T] = BatchQueue(max_pending)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"edgefleet-{self.name}-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Store what is queued, then stop (acknowledgements may no longer reach the broker)."""
        self._queue.close(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def put(self, item: T) -> None:
        """Queue one item (the consumer connection's I/O thread); blocks while the queue is full."""
        self._queue.put(item)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every item queued so far is stored and acknowledged; False on timeout."""
        return self._queue.wait_idle(timeout)

    @property
    def pending(self) -> int:
        return self._queue.pending

    def process(self, batch: list[T]) -> None:
        """Store ``batch`` and acknowledge its messages."""
        raise NotImplementedError

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._queue.take(self.batch_size, block=True)
            self._handle(batch, self.process)

    def _handle(self, batch: list[T], process: Callable[[list[T]], None]) -> None:
        """``process(batch)``, logging what it raises: one failing batch never ends the writer."""
        try:
            if batch:
                process(batch)
        except Exception:
            logger.exception("server event=%s_batch_failed size=%d", self.name, len(batch))
        finally:
            self._queue.done(len(batch))
