"""Decode, validate and turn into rows one batch of telemetry messages: the CPU-heavy half of
ingest, a pure function so it can run in a worker process.

Every message is inflated and parsed strictly (``TelemetryWindow.decode``: spec version 2,
binary, from current agents; version 1, JSON, from older ones) and must name the device of
its topic; what fails is listed as dropped with the reason (the counter's name) and a detail
for the log, never raised. What passes becomes a ``RowBatch`` for the store's dialect.
Nothing here touches the database, the broker or logging, so a worker needs no set-up and
returns only plain data; ``exit_with_parent`` makes a worker end when the server that
started it dies (a killed server would otherwise leave it waiting for work forever).
"""

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from agent.protocol.errors import DocumentTooLargeError, ProtocolError
from agent.protocol.telemetry import TelemetryWindow
from fleet_server.services.telemetry_rows import RowBatch, row_batch

PARENT_CHECK_S = 1.0


def exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: exit as soon as the process that started this worker is gone."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="edgefleet-decode-parent-watch", daemon=True).start()


@dataclass(frozen=True)
class Dropped:
    index: int  # position in the batch
    reason: str  # stats key: telemetry_oversized, telemetry_malformed, telemetry_device_mismatch
    detail: str


@dataclass(frozen=True)
class DecodedBatch:
    rows: RowBatch
    kept: list[int]  # the batch positions of ``rows``, in order
    dropped: list[Dropped]


def decode_batch(messages: Sequence[tuple[str, bytes]], sqlite: bool) -> DecodedBatch:
    """``messages`` are (device id from the topic, payload) pairs."""
    windows: list[TelemetryWindow] = []
    kept: list[int] = []
    dropped: list[Dropped] = []
    for index, (device_id, payload) in enumerate(messages):
        try:
            window = TelemetryWindow.decode(payload)
        except DocumentTooLargeError as exc:
            dropped.append(Dropped(index, "telemetry_oversized", f"device={device_id} bytes={len(payload)} "
                                                                  f"error={exc}"))
            continue
        except ProtocolError as exc:
            dropped.append(Dropped(index, "telemetry_malformed", f"device={device_id} error={str(exc)[:300]}"))
            continue
        if window.device_id != device_id:
            dropped.append(Dropped(index, "telemetry_device_mismatch", f"topic_device={device_id} "
                                                                       f"message_device={window.device_id}"))
            continue
        windows.append(window)
        kept.append(index)
    return DecodedBatch(row_batch(windows, sqlite, time.time()), kept, dropped)
