"""The on-device store-and-forward queue of encoded telemetry windows (stdlib ``sqlite3``, WAL).

Windows are kept in sequence order until the broker acknowledged them. The
queue is bounded by the bytes of the payloads it holds: appending past the
bound evicts the oldest windows first, and the number evicted is handed to
the next window appended (its ``evicted`` field), so the server learns about
the gap (a window evicted with such a report passes it on: every eviction is
reported by exactly one window that is sent). Windows the MQTT client holds a
copy of (``held``, from the publisher) are never evicted, since they may still
arrive: an evicted window is one that never left, so the evictions reported
are exactly the windows missing on the server. The bound can be exceeded by
those held windows (at most the publisher's in-flight limit, a few per
reconnect). The window sequence number is allocated here, in the same
transaction as the insert, so it survives restarts and never repeats.
"""

import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import TelemetryQueueError

log = logging.getLogger(__name__)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS windows (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL, size INTEGER NOT NULL, "
    "reports INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('next_seq', 1), ('unreported_evictions', 0), "
    "('evicted_total', 0)",
)


@dataclass(frozen=True)
class QueueStats:
    windows: int
    bytes: int
    evicted_total: int
    next_seq: int


class TelemetryQueue:
    def __init__(self, path: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise TelemetryQueueError("the telemetry queue needs a positive byte bound")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in SCHEMA:
                self._db.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise TelemetryQueueError(f"cannot open the telemetry queue {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _meta(self, key: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def append(self, build: Callable[[int, int], bytes], held: Collection[int] = ()) -> int:
        """Store ``build(seq, evicted)`` as the next window; return its sequence number.

        ``evicted`` is the number of windows evicted since the last append, reported by this window;
        windows in ``held`` (handed to the MQTT client, unacknowledged) are not evicted.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    seq, evicted = self._meta("next_seq"), self._meta("unreported_evictions")
                    payload = build(seq, evicted)
                    self._db.execute("INSERT INTO windows (seq, payload, size, reports) VALUES (?, ?, ?, ?)",
                                     (seq, payload, len(payload), evicted))
                    self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
                    dropped, unreported = self._evict(keep={seq, *held})
                    self._db.execute("UPDATE meta SET value = ? WHERE key = 'unreported_evictions'", (unreported,))
                    if dropped:
                        self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'evicted_total'", (dropped,))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise TelemetryQueueError(f"cannot store a telemetry window: {exc}") from None
        if dropped:
            log.warning("event=telemetry_evicted windows=%d bound_bytes=%d", dropped, self.max_bytes)
        return seq

    def _evict(self, keep: Collection[int]) -> tuple[int, int]:
        """Delete the oldest windows (never one in ``keep``) until the payloads fit the bound.

        Returns (windows dropped, evictions to report): a dropped window's own report of earlier
        evictions is lost with it, so its count is carried over to the next window."""
        total = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM windows").fetchone()[0])
        dropped = unreported = 0
        after = 0
        while total > self.max_bytes:
            rows = self._db.execute("SELECT seq, size, reports FROM windows WHERE seq > ? ORDER BY seq LIMIT 64",
                                    (after,)).fetchall()
            if not rows:
                break
            for seq, size, reports in rows:
                after = int(seq)
                if after in keep:
                    continue
                self._db.execute("DELETE FROM windows WHERE seq = ?", (after,))
                total -= int(size)
                dropped += 1
                unreported += 1 + int(reports)
                if total <= self.max_bytes:
                    break
        return dropped, unreported

    def peek(self, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` stored windows with a sequence above ``after_seq``, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute("SELECT seq, payload FROM windows WHERE seq > ? ORDER BY seq LIMIT ?",
                                        (after_seq, limit)).fetchall()
            except sqlite3.Error as exc:
                raise TelemetryQueueError(f"cannot read the telemetry queue: {exc}") from None
        return [(int(seq), bytes(payload)) for seq, payload in rows]

    def delete(self, seqs: Iterable[int]) -> None:
        """Forget acknowledged windows."""
        batch = [(seq,) for seq in seqs]
        if not batch:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("DELETE FROM windows WHERE seq = ?", batch)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise TelemetryQueueError(f"cannot delete acknowledged windows: {exc}") from None

    def stats(self) -> QueueStats:
        with self._lock:
            windows, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM windows").fetchone()
            return QueueStats(int(windows), int(size), self._meta("evicted_total"), self._meta("next_seq"))
