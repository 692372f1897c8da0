"""Publishes queued telemetry windows with QoS 1, in sequence order; deletes each one only after
the broker's PUBACK.

Up to ``max_inflight`` windows are handed to the MQTT client at a time. Every
copy the client was given is remembered by its message id, and the PUBACK of
any copy settles the window: paho reports it through ``on_puback`` (its network
thread; only enqueued here) and the pump, on the telemetry thread, deletes the
window from the queue. While the link is down nothing new is published.

Nothing waits for an acknowledgement that may never come:

- after every (re)connect the in-flight bookkeeping is forgotten and windows go
  out again from the oldest one still queued (paho may also retransmit the
  copies it held; the server deduplicates on (device, window start, sequence),
  so a window can arrive twice but is stored once);
- a window not acknowledged ``ack_timeout_s`` after it was sent on a live link
  is published again, with everything after it, in order.

Windows the client holds a copy of can still arrive, so the queue never evicts
them (``held``): what the queue counts as evicted is exactly what never left.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

from agent.telemetry.queue import TelemetryQueue

log = logging.getLogger(__name__)

MAX_INFLIGHT = 32
ACK_TIMEOUT_S = 30.0


class TelemetryLink(Protocol):
    connected: threading.Event

    def publish_telemetry(self, payload: bytes) -> tuple[bool, int]:
        """Hand ``payload`` to the MQTT client (QoS 1): (accepted, message id)."""
        ...


class TelemetryPublisher:
    def __init__(self, store: TelemetryQueue, link: TelemetryLink, max_inflight: int = MAX_INFLIGHT,
                 ack_timeout_s: float = ACK_TIMEOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.link = link
        self.max_inflight = max_inflight
        self.ack_timeout_s = ack_timeout_s
        self._clock = clock
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._reconnected = threading.Event()
        self._lock = threading.Lock()  # guards _copies: ``held`` is read by whoever stores a window
        self._copies: dict[int, int] = {}  # message id -> sequence, every copy the client holds
        self._pending: dict[int, float] = {}  # sequence -> when last sent: the windows in flight
        self._cursor = 0  # highest sequence in flight
        self.acknowledged = 0
        self.republished = 0

    # -- any thread -------------------------------------------------------------

    def on_puback(self, mid: int) -> None:
        self._acks.put(mid)

    def on_connected(self) -> None:
        self._reconnected.set()

    @property
    def inflight(self) -> int:
        return len(self._pending)

    def held(self) -> frozenset[int]:
        """Sequences of the windows the MQTT client holds a copy of (they may still arrive)."""
        with self._lock:
            return frozenset(self._copies.values())

    # -- the telemetry thread -------------------------------------------------------

    def pump(self) -> int:
        """Settle acknowledgements, start over after a reconnect, republish what timed out, publish
        more; return windows published."""
        self._settle_acks()
        if not self.link.connected.is_set():
            return 0
        if self._reconnected.is_set():
            self._reconnected.clear()
            self._restart("reconnected")
        self._expire()
        published = 0
        while len(self._pending) < self.max_inflight:
            batch = self.store.peek(self._cursor, self.max_inflight - len(self._pending))
            if not batch:
                break
            for seq, payload in batch:
                accepted, mid = self.link.publish_telemetry(payload)
                if not accepted:
                    return published
                with self._lock:
                    self._copies[mid] = seq
                self._pending[seq] = self._clock()
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
            with self._lock:
                seq = self._copies.pop(mid, None)
            if seq is not None and seq not in done:
                done.append(seq)
                self._pending.pop(seq, None)
        if done:
            self.store.delete(done)
            self.acknowledged += len(done)
            with self._lock:  # the other copies of a settled window no longer matter
                for mid in [mid for mid, seq in self._copies.items() if seq in done]:
                    del self._copies[mid]

    def _restart(self, reason: str) -> None:
        """Forget what is in flight: the next publishing starts at the oldest window still queued."""
        if self._pending:
            self.republished += len(self._pending)
            log.info("event=telemetry_resend reason=%s from_seq=%d unacknowledged=%d", reason, min(self._pending),
                     len(self._pending))
        self._pending.clear()
        self._cursor = 0

    def _expire(self) -> None:
        now = self._clock()
        stale = [seq for seq, sent_at in self._pending.items() if now - sent_at > self.ack_timeout_s]
        if not stale:
            return
        oldest = min(stale)
        log.warning("event=telemetry_republish from_seq=%d unacknowledged=%d", oldest, len(stale))
        self.republished += len(stale)
        for seq in [seq for seq in self._pending if seq >= oldest]:
            del self._pending[seq]
        self._cursor = oldest - 1
