"""Publishes queued telemetry windows with QoS 1, in sequence order; deletes each one only after
the broker's PUBACK.

Up to ``max_inflight`` windows are handed to paho at a time, each remembered
by its message id. paho reports the PUBACK through ``on_puback`` (its network
thread; only enqueued here), and the pump, on the telemetry thread, deletes
the acknowledged window from the queue. While the link is down nothing new
is published; paho retransmits what it holds once reconnected. A window not
acknowledged ``ack_timeout_s`` after it was sent (or the link came back) is
published again from the queue, in order from the oldest such window: the
server deduplicates on (device, window start, sequence), so a window can
arrive twice but is stored once.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.telemetry.queue import TelemetryQueue

log = logging.getLogger(__name__)

MAX_INFLIGHT = 32
ACK_TIMEOUT_S = 60.0


class TelemetryLink(Protocol):
    connected: threading.Event

    def publish_telemetry(self, payload: bytes) -> tuple[bool, int]:
        """Hand ``payload`` to the MQTT client (QoS 1): (accepted, message id)."""
        ...


@dataclass
class _Inflight:
    seq: int
    sent_at: float


class TelemetryPublisher:
    def __init__(self, store: TelemetryQueue, link: TelemetryLink, max_inflight: int = MAX_INFLIGHT,
                 ack_timeout_s: float = ACK_TIMEOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.link = link
        self.max_inflight = max_inflight
        self.ack_timeout_s = ack_timeout_s
        self._clock = clock
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._inflight: dict[int, _Inflight] = {}  # message id -> window
        self._cursor = 0  # highest sequence handed to paho
        self._connected_at = clock()
        self.acknowledged = 0
        self.republished = 0

    # -- any thread -------------------------------------------------------------

    def on_puback(self, mid: int) -> None:
        self._acks.put(mid)

    def on_connected(self) -> None:
        self._connected_at = self._clock()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # -- the telemetry thread -------------------------------------------------------

    def pump(self) -> int:
        """Settle acknowledgements, republish what timed out, publish more; return windows published."""
        self._settle_acks()
        if not self.link.connected.is_set():
            return 0
        self._expire()
        published = 0
        while len(self._inflight) < self.max_inflight:
            batch = self.store.peek(self._cursor, self.max_inflight - len(self._inflight))
            if not batch:
                break
            for seq, payload in batch:
                accepted, mid = self.link.publish_telemetry(payload)
                if not accepted:
                    return published
                self._inflight[mid] = _Inflight(seq, self._clock())
                self._cursor = seq
                published += 1
        return published

    def _settle_acks(self) -> None:
        done = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._inflight.pop(mid, None)
            if entry is not None:
                done.append(entry.seq)
        if done:
            self.store.delete(done)
            self.acknowledged += len(done)

    def _expire(self) -> None:
        now = self._clock()
        stale = [seq for seq, entry in ((e.seq, e) for e in self._inflight.values())
                 if now - max(entry.sent_at, self._connected_at) > self.ack_timeout_s]
        if not stale:
            return
        oldest = min(stale)
        for mid in [mid for mid, entry in self._inflight.items() if entry.seq >= oldest]:
            del self._inflight[mid]
        self._cursor = min(self._cursor, oldest - 1)
        self.republished += len(stale)
        log.warning("event=telemetry_republish from_seq=%d unacknowledged=%d", oldest, len(stale))
