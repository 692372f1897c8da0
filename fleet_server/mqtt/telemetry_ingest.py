"""Telemetry ingest behind the MQTT bridge: a bounded queue and a writer thread that stores
windows in batches and acknowledges each message only after its batch committed.

paho's network thread only enqueues (topic device id, payload, ack); when the
queue is full it blocks, which stops reading from the socket and lets the
broker hold the backlog. The writer takes what is queued (up to
``batch_size``), decodes and validates each window, drops and counts (and
acknowledges) what is malformed, oversized, claims another device than its
topic or comes from an unknown device, stores the rest in one transaction,
then acknowledges them. A failing database is retried with backoff; the
messages stay unacknowledged meanwhile, so nothing is lost.
"""

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from agent.protocol.errors import DocumentTooLargeError, ProtocolError
from agent.protocol.telemetry import TelemetryWindow
from fleet_server.services.telemetry_store import StoreResult, TelemetryStore

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000
MAX_PENDING = 20_000
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class _Message:
    device_id: str  # from the topic
    payload: bytes
    ack: Callable[[], None]


class TelemetryIngestor:
    def __init__(self, store: TelemetryStore, batch_size: int = BATCH_SIZE, max_pending: int = MAX_PENDING) -> None:
        self.store = store
        self.batch_size = batch_size
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._queue: queue.Queue[_Message | None] = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgefleet-telemetry-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Store what is queued, then stop (acknowledgements may no longer reach the broker)."""
        self._stopping.set()
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, device_id: str, payload: bytes, ack: Callable[[], None]) -> None:
        """Queue one telemetry message (paho's network thread); blocks while the queue is full."""
        self._queue.put(_Message(device_id, payload, ack))

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _count(self, counts: Counter[str]) -> None:
        with self._stats_lock:
            self.stats.update(counts)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._process(batch)
                    return
                batch.append(item)
            try:
                self._process(batch)
            except Exception:  # never let one batch end ingestion
                logger.exception("server event=telemetry_batch_failed size=%d", len(batch))

    def _process(self, batch: list[_Message]) -> None:
        counts: Counter[str] = Counter()
        windows: list[TelemetryWindow] = []
        acks: list[Callable[[], None]] = []
        for message in batch:
            window = self._decode(message, counts)
            if window is None:
                message.ack()  # dropped for good: redelivery would not make it valid
            else:
                windows.append(window)
                acks.append(message.ack)
        if windows:
            result = self._store(windows, counts)
            counts.update(telemetry_stored=result.stored, telemetry_duplicate=result.duplicates,
                          telemetry_unknown_device=result.unknown_device)
            if result.unknown_device:
                logger.warning("server event=telemetry_dropped reason=unknown_device windows=%d", result.unknown_device)
            for ack in acks:
                ack()
        self._count(counts)

    def _decode(self, message: _Message, counts: Counter[str]) -> TelemetryWindow | None:
        try:
            window = TelemetryWindow.decode(message.payload)
        except DocumentTooLargeError as exc:
            counts["telemetry_oversized"] += 1
            logger.warning("server event=telemetry_dropped reason=oversized device=%s bytes=%d error=%s",
                           message.device_id, len(message.payload), exc)
            return None
        except ProtocolError as exc:
            counts["telemetry_malformed"] += 1
            logger.warning("server event=telemetry_dropped reason=malformed device=%s error=%s",
                           message.device_id, str(exc)[:300])
            return None
        if window.device_id != message.device_id:
            counts["telemetry_device_mismatch"] += 1
            logger.warning("server event=telemetry_dropped reason=device_mismatch topic_device=%s "
                           "message_device=%s", message.device_id, window.device_id)
            return None
        return window

    def _store(self, windows: list[TelemetryWindow], counts: Counter[str]) -> StoreResult:
        """Store with retries while the database is unreachable; a batch the database refuses
        (a value out of a column's range, say) is split so only the offending windows are dropped."""
        attempt = 0
        while True:
            try:
                return self.store.store(windows)
            except OperationalError as exc:
                delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
                attempt += 1
                logger.warning("server event=telemetry_store_retry attempt=%d windows=%d delay_s=%.1f error=%s",
                               attempt, len(windows), delay, str(exc.orig or exc)[:300])
                if self._stopping.wait(delay) and attempt > len(RETRY_DELAYS_S):
                    raise
            except SQLAlchemyError as exc:
                if len(windows) == 1:
                    counts["telemetry_rejected"] += 1
                    logger.warning("server event=telemetry_dropped reason=rejected_by_database device=%s seq=%d "
                                   "error=%s", windows[0].device_id, windows[0].seq,
                                   str(getattr(exc, "orig", None) or exc)[:300])
                    return StoreResult(0, 0, 0)
                middle = len(windows) // 2
                first, second = self._store(windows[:middle], counts), self._store(windows[middle:], counts)
                return StoreResult(first.stored + second.stored, first.duplicates + second.duplicates,
                                   first.unknown_device + second.unknown_device)
