"""One network thread for many paho clients: what lets a simulator run
hundreds of agents in one process.

paho's ``loop_start`` gives every client its own thread around ``select()``.
``SharedNetworkLoop`` instead drives any number of clients from one thread
with a ``selectors`` selector (epoll on Linux, so no ``FD_SETSIZE`` limit),
through paho's external-loop API: ``loop_read``/``loop_write``/``loop_misc``
and the socket open/close/register-write callbacks. Publishing from other
threads only queues the packet and wakes the loop, which does all socket
I/O. A client whose connection drops is reconnected with jittered
exponential backoff, as paho's own loop would.
"""

import logging
import random
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

MISC_INTERVAL_S = 0.5
SELECT_TIMEOUT_S = 0.25


@dataclass
class _Entry:
    client: mqtt.Client
    min_delay_s: float
    max_delay_s: float
    delay_s: float = 0.0
    next_connect: float = 0.0
    removing: bool = False
    closed: threading.Event = field(default_factory=threading.Event)


class SharedNetworkLoop:
    def __init__(self, min_reconnect_s: float = 0.5, max_reconnect_s: float = 30.0) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._entries: dict[int, _Entry] = {}  # id(client) -> entry
        self._lock = threading.Lock()
        self._want_write: set[int] = set()
        self._min_reconnect_s = min_reconnect_s
        self._max_reconnect_s = max_reconnect_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-shared-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(10)
        for entry in list(self._entries.values()):
            entry.client._sock_close()  # noqa: SLF001 - paho has no public close for an external loop
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    @property
    def client_count(self) -> int:
        return len(self._entries)

    # -- clients ---------------------------------------------------------------

    def add(self, client: mqtt.Client) -> None:
        """Drive ``client`` (after ``connect_async``) from now on; it connects on the loop thread."""
        client.on_socket_open = self._socket_opened
        client.on_socket_close = self._socket_closed
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        entry = _Entry(client, self._min_reconnect_s * random.uniform(0.5, 1.5), self._max_reconnect_s)
        with self._lock:
            self._entries[id(client)] = entry
        self._wake()

    def remove(self, client: mqtt.Client, timeout: float = 5.0) -> None:
        """After ``client.disconnect()``: wait until the DISCONNECT went out, then forget the client."""
        entry = self._entries.get(id(client))
        if entry is None:
            return
        entry.removing = True
        self._wake()
        if client.socket() is not None:
            entry.closed.wait(timeout)
        with self._lock:
            self._entries.pop(id(client), None)
        if client.socket() is not None:
            client._sock_close()  # noqa: SLF001 - the broker did not close it in time

    # -- paho socket callbacks ---------------------------------------------------

    def _socket_opened(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._selector.register(sock, selectors.EVENT_READ, id(client))

    def _socket_closed(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        entry = self._entries.get(id(client))
        if entry is not None:
            entry.closed.set()

    def _register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with self._lock:
            self._want_write.add(id(client))
        self._wake()

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        pass  # the loop asks want_write() before every select

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass

    # -- the loop ----------------------------------------------------------------

    def _run(self) -> None:
        last_misc = 0.0
        while not self._stop.is_set():
            try:
                self._update_interest()
                for key, mask in self._selector.select(SELECT_TIMEOUT_S):
                    if key.data is None:
                        self._drain_wake()
                        continue
                    entry = self._entries.get(key.data)
                    if entry is None:
                        continue
                    if mask & selectors.EVENT_READ:
                        entry.client.loop_read()
                    if mask & selectors.EVENT_WRITE and entry.client.socket() is not None:
                        entry.client.loop_write()
                now = time.monotonic()
                if now - last_misc >= MISC_INTERVAL_S:
                    last_misc = now
                    self._misc(now)
            except Exception:
                log.exception("event=mqtt_shared_loop_error")
                time.sleep(0.1)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _update_interest(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._want_write.clear()
        for entry in entries:
            sock = entry.client.socket()
            if sock is None:
                continue
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if entry.client.want_write() else 0)
            try:
                if self._selector.get_key(sock).events != events:
                    self._selector.modify(sock, events, id(entry.client))
            except (KeyError, ValueError):
                pass

    def _misc(self, now: float) -> None:
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            client = entry.client
            if client.socket() is not None:
                client.loop_misc()
                if client.is_connected():
                    entry.delay_s = 0.0
            elif not entry.removing and now >= entry.next_connect:
                self._connect(entry, now)

    @staticmethod
    def _connect(entry: _Entry, now: float) -> None:
        """One connection attempt; the next one (if this fails or is refused) waits twice as long."""
        entry.delay_s = min(entry.max_delay_s, max(entry.min_delay_s, entry.delay_s * 2))
        entry.next_connect = now + entry.delay_s * random.uniform(0.75, 1.25)
        try:
            entry.client.reconnect()
        except OSError as exc:
            log.debug("event=mqtt_connect_failed error=%r retry_in_s=%.1f", str(exc), entry.delay_s)
