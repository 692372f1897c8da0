"""Telemetry windows the devices produced against what the server stored: lost, duplicated, evicted.

Every device numbers its windows 1, 2, 3, ... in its store-and-forward queue (``agent.telemetry.
queue``: ``next_seq``, the windows still queued, and the total it evicted at its byte bound). A
window leaves the queue when the broker acknowledged it; from then on the server must store it
exactly once. So, per device, once the pipeline settled:

- ``lost``: windows no longer queued, not stored, beyond what the device evicted;
- ``duplicates``: stored rows beyond one per (device, seq) (the server's key is
  (device, window start, seq), so a window counted twice would be a second row for a seq);
- ``sent``: windows that left the queue acknowledged (produced - queued - evicted);
- ``stored``: distinct windows stored, not counting ones still queued (in flight).

Reads the device queues and the server's SQLite database read-only, beside the running processes.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fleet_server.processes import WaitTimeoutError, wait_until
from tests.faults.toolkit.summary import TelemetryCount

QUEUE_FILE = Path("telemetry") / "queue.db"


@dataclass(frozen=True)
class DeviceQueue:
    produced: int
    queued: frozenset[int]
    evicted: int


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def device_queue(data_dir: Path) -> DeviceQueue:
    path = Path(data_dir) / QUEUE_FILE
    if not path.exists():
        return DeviceQueue(0, frozenset(), 0)
    connection = _read_only(path)
    try:
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        queued = frozenset(seq for (seq,) in connection.execute("SELECT seq FROM windows"))
    finally:
        connection.close()
    return DeviceQueue(int(meta.get("next_seq", 1)) - 1, queued, int(meta.get("evicted_total", 0)))


def stored_windows(server_db: Path) -> dict[str, Counter[int]]:
    """Rows per (device, seq) in the server's ``telemetry_window`` table."""
    connection = _read_only(server_db)
    try:
        rows = connection.execute("SELECT device_id, seq, COUNT(*) FROM telemetry_window GROUP BY device_id, seq")
        stored: dict[str, Counter[int]] = {}
        for device_id, seq, count in rows:
            stored.setdefault(device_id, Counter())[int(seq)] = int(count)
        return stored
    finally:
        connection.close()


def _naive_utc(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def devices_with_windows_since(server_db: Path, since: datetime) -> set[str]:
    """Devices with a stored window that started at or after ``since`` (a UTC time)."""
    cutoff = _naive_utc(since.isoformat())
    connection = _read_only(server_db)
    try:
        rows = connection.execute("SELECT device_id, MAX(seq), window_start FROM telemetry_window GROUP BY device_id")
        return {device_id for device_id, _, start in rows if _naive_utc(str(start)) >= cutoff}
    finally:
        connection.close()


def wait_for_windows_since(server_db: Path, devices: Iterable[str], since: datetime, timeout: float) -> None:
    """Wait until every one of ``devices`` has a window stored that started at or after ``since``."""
    wanted = set(devices)
    try:
        wait_until(lambda: wanted <= devices_with_windows_since(server_db, since), timeout,
                   "a telemetry window started since then stored for every device", interval=1.0)
    except WaitTimeoutError:
        missing = sorted(wanted - devices_with_windows_since(server_db, since))
        raise AssertionError(f"no telemetry window started since {since.isoformat()} stored after {timeout:.0f}s "
                             f"for {len(missing)} devices: {missing}") from None


@dataclass(frozen=True)
class Ledger:
    count: TelemetryCount
    missing: dict[str, list[int]]  # per device: windows gone from its queue and not stored

    @property
    def settled(self) -> bool:
        return self.count.lost == 0


def snapshot(devices: Mapping[str, Path]) -> dict[str, DeviceQueue]:
    """Every device's queue now (device id -> data directory in, device id -> queue out)."""
    return {device_id: device_queue(data_dir) for device_id, data_dir in devices.items()}


def take_ledger(devices: Mapping[str, Path], server_db: Path) -> Ledger:
    """The ledger of ``devices`` (device id -> data directory) against the server's database now."""
    return ledger_of(snapshot(devices), server_db)


def ledger_of(queues: Mapping[str, DeviceQueue], server_db: Path) -> Ledger:
    """The windows that had left the devices when ``queues`` was taken, against what the server stored since.

    The device queues are read first: a window that leaves a queue after the snapshot is not expected yet.
    """
    stored = stored_windows(server_db)
    totals = Counter[str]()
    missing: dict[str, list[int]] = {}
    for device_id, queue in queues.items():
        rows = Counter({seq: n for seq, n in stored.get(device_id, Counter()).items() if seq <= queue.produced})
        left = set(range(1, queue.produced + 1)) - queue.queued
        gone = sorted(left - set(rows))
        if gone:
            missing[device_id] = gone
        totals["sent"] += queue.produced - len(queue.queued) - queue.evicted
        totals["stored"] += len(set(rows) - queue.queued)
        totals["duplicates"] += sum(count - 1 for count in rows.values())
        totals["lost"] += max(0, len(gone) - queue.evicted)
        totals["evicted"] += queue.evicted
    count = TelemetryCount(sent=totals["sent"], stored=totals["stored"], duplicates=totals["duplicates"],
                           lost=totals["lost"], evicted=totals["evicted"])
    return Ledger(count, missing)


def settled_ledger(devices: Mapping[str, Path], server_db: Path, timeout: float = 60.0) -> Ledger:
    """The ledger once every window that had left a device (when this is called) is stored, or as it is
    after ``timeout``. Devices go on producing windows meanwhile; those are not waited for."""
    queues = snapshot(devices)
    try:
        return wait_until(lambda: (ledger := ledger_of(queues, server_db)).settled and ledger, timeout,
                          "every acknowledged telemetry window to be stored", interval=0.5)
    except WaitTimeoutError:
        return ledger_of(queues, server_db)
