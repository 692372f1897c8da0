"""Device ``status`` and ``presence`` reports behind the MQTT bridge: stored in batches by a
writer thread, each message acknowledged only after the transaction that stored it committed.

The consumer connection's I/O thread validates a report and queues it (``BatchQueue``, in
arrival order); the writer takes what is queued, up to ``batch_size``, and
stores it in one write transaction (``ingest_batch``), in arrival order, so a
device's reports keep their order and every sequence/duplicate check sees the
reports before it. One transaction per report held the server to a few dozen
reports a second on SQLite, far behind a rollout's fan-out.

A database that is unreachable or locked is retried with backoff, the messages
unacknowledged meanwhile. A batch the database refuses, or one still failing
after the retries, is rolled back and stored one report at a time (each with
its own retries), so one bad report cannot block the others; a report that
still fails is counted as ``error`` and acknowledged, as it always was.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from agent.protocol.messages import StatusMessage
from fleet_server.mqtt.batch_queue import BatchWriter
from fleet_server.services import ingest
from fleet_server.services.ingest import Applied, IngestOutcome
from fleet_server.services.ingest_batch import Report, commit_batch

logger = logging.getLogger(__name__)

BATCH_SIZE = 200
MAX_PENDING = 10_000
DB_RETRY_DELAYS_S = (0.2, 0.5, 1.0)
T = TypeVar("T")


@dataclass(frozen=True)
class _Queued:
    report: Report
    ack: Callable[[], None]


class StatusWriter(BatchWriter[_Queued]):
    name = "status"

    def __init__(self, engine: Engine, on_outcome: Callable[[str], None], batch_size: int = BATCH_SIZE,
                 max_pending: int = MAX_PENDING) -> None:
        super().__init__(batch_size, max_pending)
        self.engine = engine
        self.on_outcome = on_outcome  # the bridge's stats counter

    def submit(self, report: Report, ack: Callable[[], None]) -> None:
        """Queue one validated report (the consumer connection's I/O thread); blocks while the queue is full."""
        self.put(_Queued(report, ack))

    def process(self, batch: list[_Queued]) -> None:
        """Store ``batch`` in one transaction, then acknowledge it; one by one if that fails."""
        applied = self._commit_with_retries([queued.report for queued in batch])
        if applied is None:
            for queued in batch:
                self._finish(queued, self.record_one(queued.report))
            return
        for queued, result in zip(batch, applied, strict=True):
            result.write_log()
            self._finish(queued, result.outcome.value)

    def _finish(self, queued: _Queued, outcome: str) -> None:
        if outcome == IngestOutcome.UNKNOWN_DEVICE.value:
            logger.warning("server event=mqtt_message_dropped reason=unknown_device device=%s kind=%s",
                           queued.report.device_id, "status" if isinstance(queued.report, StatusMessage)
                           else "presence")
        queued.ack()
        self.on_outcome(outcome)

    def _commit_with_retries(self, reports: list[Report]) -> list[Applied] | None:
        """The batch's results once committed, or None when it has to be stored one report at a time."""
        try:
            return self._retrying(lambda session: commit_batch(session, reports), f"reports={len(reports)}")
        except OperationalError:
            logger.warning("server event=status_batch_unstored reports=%d detail='storing one at a time'",
                           len(reports))
        except Exception as exc:  # refused as a whole: find the report(s) at fault one by one
            logger.warning("server event=status_batch_refused reports=%d error=%s", len(reports), str(exc)[:300])
        return None

    def record_one(self, report: Report) -> str:
        """Store one report in a transaction of its own (retrying an unreachable database); the outcome."""
        try:
            return self._retrying(lambda session: ingest.record_report(session, report).value,
                                  f"device={report.device_id}")
        except Exception:  # never let one message kill the consumer
            logger.exception("server event=mqtt_message_failed device=%s", report.device_id)
        return "error"

    def _retrying(self, store: Callable[[Session], T], what: str) -> T:
        """``store`` in a transaction of its own, tried again after each of ``DB_RETRY_DELAYS_S`` while the
        database is unreachable or locked; what the last attempt raises is raised."""
        for attempt, delay in enumerate(DB_RETRY_DELAYS_S, start=1):
            try:
                return self._in_transaction(store)
            except OperationalError as exc:
                logger.warning("server event=ingest_retry attempt=%d %s error=%s", attempt, what, exc.orig or exc)
                time.sleep(delay)
        return self._in_transaction(store)

    def _in_transaction(self, store: Callable[[Session], T]) -> T:
        with Session(self.engine, expire_on_commit=False) as session:
            return store(session)
