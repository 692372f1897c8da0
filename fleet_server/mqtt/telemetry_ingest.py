"""Telemetry ingest behind the MQTT bridge: a bounded queue and a writer thread that stores
windows in batches and acknowledges each message only after its batch committed.

The consumer connection's I/O thread only enqueues (topic device id, payload, ack) in a
``BatchQueue`` (blocking while it is full, so the broker holds the backlog).
The writer takes what is queued (up to ``batch_size``) and has it decoded and validated (``telemetry_decode``), in
``decode_workers`` worker processes when there are any: decoding is most of the
CPU a window costs and the GIL would keep it on one core. While a worker
decodes the next batch, the writer stores the previous one. What is malformed,
oversized or claims another device than its topic is dropped, counted and
acknowledged; the store drops unknown devices; the rest is inserted in one
transaction, then acknowledged. A failing database is retried with backoff;
the messages stay unacknowledged meanwhile, so nothing is lost. A worker that
dies is replaced, and its batch is decoded in the writer thread.
"""

import logging
import multiprocessing
import os
import threading
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from fleet_server.mqtt.batch_queue import BatchWriter
from fleet_server.mqtt.telemetry_decode import DecodedBatch, decode_batch, exit_with_parent
from fleet_server.services.telemetry_rows import RowBatch
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


class TelemetryIngestor(BatchWriter[_Message]):
    name = "telemetry"

    def __init__(self, store: TelemetryStore, batch_size: int = BATCH_SIZE, max_pending: int = MAX_PENDING,
                 decode_workers: int = 0) -> None:
        super().__init__(batch_size, max_pending)
        self.store = store
        self.decode_workers = decode_workers  # 0: decode in the writer thread
        self._pool: ProcessPoolExecutor | None = None  # started with the first batch
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._stopping = threading.Event()

    def stop(self, timeout: float = 10.0) -> None:
        """Store what is queued, then stop (acknowledgements may no longer reach the broker)."""
        self._stopping.set()
        super().stop(timeout)
        self._reset_pool()

    def submit(self, device_id: str, payload: bytes, ack: Callable[[], None]) -> None:
        """Queue one telemetry message (the consumer connection's I/O thread); blocks while the queue is full."""
        self.put(_Message(device_id, payload, ack))

    def _count(self, counts: Counter[str]) -> None:
        with self._stats_lock:
            self.stats.update(counts)

    def _run(self) -> None:
        in_flight: deque[tuple[list[_Message], Future[DecodedBatch] | None]] = deque()
        depth = 2 if self.decode_workers > 0 else 1  # a worker decodes the next batch while this one is stored
        stopping = False
        while in_flight or not stopping:
            batch: list[_Message] = []
            if not stopping:  # wait for messages only when nothing is being decoded
                batch, stopping = self._queue.take(self.batch_size, block=not in_flight)
                if batch:
                    in_flight.append((batch, self._start_decode(batch)))
            if in_flight and (stopping or not batch or len(in_flight) >= depth):
                batch, decoding = in_flight.popleft()
                self._handle(batch, partial(self.process, decoding=decoding))

    def _start_decode(self, batch: list[_Message]) -> "Future[DecodedBatch] | None":
        if self.decode_workers <= 0:
            return None
        try:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.decode_workers, multiprocessing.get_context("spawn"),
                                                 initializer=exit_with_parent, initargs=(os.getpid(),))
            return self._pool.submit(decode_batch, [(m.device_id, m.payload) for m in batch], self.store.sqlite)
        except RuntimeError as exc:  # a broken pool, or one shutting down
            logger.warning("server event=telemetry_decode_pool_unavailable error=%s", exc)
            self._reset_pool()
            return None

    def _reset_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _decoded(self, batch: list[_Message], decoding: "Future[DecodedBatch] | None") -> DecodedBatch:
        if decoding is not None:
            try:
                return decoding.result()
            except Exception as exc:  # the worker died (or the batch broke it): decode here instead
                logger.warning("server event=telemetry_decode_worker_failed size=%d error=%r", len(batch), exc)
                self._reset_pool()
        return decode_batch([(m.device_id, m.payload) for m in batch], self.store.sqlite)

    def process(self, batch: list[_Message], decoding: "Future[DecodedBatch] | None" = None) -> None:
        """Store ``batch`` (decoded by ``decoding`` when a worker has it) and acknowledge its messages."""
        decoded = self._decoded(batch, decoding)
        counts: Counter[str] = Counter()
        for dropped in decoded.dropped:
            counts[dropped.reason] += 1
            logger.warning("server event=telemetry_dropped reason=%s %s", dropped.reason.removeprefix("telemetry_"),
                           dropped.detail)
            batch[dropped.index].ack()  # dropped for good: redelivery would not make it valid
        if decoded.kept:
            result = self._store(decoded.rows, counts)
            counts.update(telemetry_stored=result.stored, telemetry_duplicate=result.duplicates,
                          telemetry_unknown_device=result.unknown_device)
            if result.unknown_device:
                logger.warning("server event=telemetry_dropped reason=unknown_device windows=%d", result.unknown_device)
            for index in decoded.kept:
                batch[index].ack()
        self._count(counts)

    def _store(self, rows: RowBatch, counts: Counter[str]) -> StoreResult:
        """Store with retries while the database is unreachable; a batch the database refuses
        (a value out of a column's range, say) is split so only the offending windows are dropped."""
        attempt = 0
        while True:
            try:
                return self.store.store_rows(rows)
            except OperationalError as exc:
                delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
                attempt += 1
                logger.warning("server event=telemetry_store_retry attempt=%d windows=%d delay_s=%.1f error=%s",
                               attempt, len(rows), delay, str(exc.orig or exc)[:300])
                if self._stopping.wait(delay) and attempt > len(RETRY_DELAYS_S):
                    raise
            except SQLAlchemyError as exc:
                if len(rows) == 1:
                    counts["telemetry_rejected"] += 1
                    logger.warning("server event=telemetry_dropped reason=rejected_by_database device=%s seq=%d "
                                   "error=%s", rows.device_ids[0], rows.rows[0][2],
                                   str(getattr(exc, "orig", None) or exc)[:300])
                    return StoreResult(0, 0, 0)
                first_half, second_half = rows.halves()
                first, second = self._store(first_half, counts), self._store(second_half, counts)
                return StoreResult(first.stored + second.stored, first.duplicates + second.duplicates,
                                   first.unknown_device + second.unknown_device)
