"""A controllable TCP proxy on loopback: the network between a device and its server or broker.

Each accepted connection is relayed to one upstream address. Per direction, a reader thread
takes chunks off one socket and queues them with the time they are due; a writer thread sends
them when due. What happens on the way is read from the proxy's ``LinkConditions`` at every
chunk, so a test can change them while transfers run:

- ``latency_s``: one-way delay added to every chunk (pipelined, as on a real long link);
- ``bandwidth_bps``: bytes per second per connection and direction (0: unlimited);
- ``loss_rate`` / ``loss_stall_s``: a chunk is "lost" and arrives ``loss_stall_s`` late, holding
  up those behind it (what packet loss looks like above TCP: stalls, not gaps);
- ``reset_rate``: a chunk is not delivered and the connection is reset instead (RST);
- ``partition()`` / ``heal()``: nothing moves, in either direction, on existing or new
  connections, until healed (packets dropped silently: no RST, clients see silence);
- ``reset_connections()``: every open connection is reset at once.

In HTTP mode the proxy reads each connection's request head first, records it, and asks its
``HttpFaultPlan`` what to do: answer with an error, or relay the response truncated, stalled
or with a wrong byte (``http_faults``). Clients that send ``Connection: close`` (the agent's
urllib downloads) get one decision per request; later requests on a kept-alive connection pass.
"""

from __future__ import annotations

import logging
import queue
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from tests.faults.toolkit.http_faults import (
    HEAD_END,
    PASS,
    HttpAction,
    HttpFaultKind,
    HttpFaultPlan,
    ResponseMangler,
    error_response,
    parse_request_line,
)

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
CHUNK_BYTES = 16 * 1024
MAX_HEAD_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 5.0


@dataclass
class LinkConditions:
    latency_s: float = 0.0
    bandwidth_bps: float = 0.0
    loss_rate: float = 0.0
    loss_stall_s: float = 0.3
    reset_rate: float = 0.0


@dataclass
class ProxyStats:
    connections: int = 0
    bytes_up: int = 0  # client -> upstream
    bytes_down: int = 0  # upstream -> client
    stalls: int = 0
    resets: int = 0
    refused_upstream: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(eq=False)
class _Connection:
    client: socket.socket
    upstream: socket.socket | None = None
    closed: threading.Event = field(default_factory=threading.Event)
    client_done: threading.Event = field(default_factory=threading.Event)  # the client stopped sending
    open_directions: int = 2
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]

    def abort(self) -> None:
        """Reset both sides (RST, not FIN).

        ``SHUT_RD`` wakes a thread blocked in ``recv`` without sending anything (closing alone
        would not: the blocked call keeps the socket alive); the zero linger makes the close a RST.
        """
        self.closed.set()
        for sock in self.sockets():
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
            _close(sock)

    def close(self) -> None:
        self.closed.set()
        for sock in self.sockets():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            _close(sock)

    def direction_done(self) -> None:
        with self.lock:
            self.open_directions -= 1
            last = self.open_directions == 0
        if last:
            self.close()


class FaultProxy:
    """Relays ``listen_host:port`` to ``upstream_host:upstream_port`` under controllable faults."""

    def __init__(self, upstream_port: int, upstream_host: str = LOOPBACK, *, listen_host: str = LOOPBACK,
                 http: bool = False, http_plan: HttpFaultPlan | None = None, seed: int = 0,
                 name: str = "proxy") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.name = name
        self.http = http or http_plan is not None
        self.http_plan = http_plan
        self.conditions = LinkConditions()
        self.stats = ProxyStats()
        self.request_heads: list[str] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._healed = threading.Event()
        self._healed.set()
        self._closed = threading.Event()
        self._connections: set[_Connection] = set()
        self._listener = socket.create_server((listen_host, 0))
        self.host = listen_host
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True).start()

    def __repr__(self) -> str:
        return f"FaultProxy({self.name}: {self.host}:{self.port} -> {self.upstream[0]}:{self.upstream[1]})"

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    # -- controls ------------------------------------------------------------------

    def shape(self, **conditions: float) -> None:
        """Set link conditions (``latency_s``, ``bandwidth_bps``, ``loss_rate``, ``loss_stall_s``, ``reset_rate``)."""
        with self._lock:
            for key, value in conditions.items():
                if not hasattr(self.conditions, key):
                    raise TypeError(f"unknown link condition {key!r}")
                setattr(self.conditions, key, float(value))

    def clear(self) -> None:
        """Back to a perfect link (a partition is healed too)."""
        with self._lock:
            self.conditions = LinkConditions()
        self.heal()

    def partition(self) -> None:
        self._healed.clear()

    def heal(self) -> None:
        self._healed.set()

    @property
    def partitioned(self) -> bool:
        return not self._healed.is_set()

    def set_http_plan(self, plan: HttpFaultPlan | None) -> None:
        self.http = self.http or plan is not None
        self.http_plan = plan

    def reset_connections(self) -> int:
        """Reset every open connection; return how many."""
        with self._lock:
            connections = list(self._connections)
            self.stats.resets += len(connections)
        for connection in connections:
            connection.abort()
        return len(connections)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def close(self) -> None:
        self._closed.set()
        self._healed.set()
        _close(self._listener)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.abort()

    # -- relay -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            connection = _Connection(client)
            with self._lock:
                self._connections.add(connection)
                self.stats.connections += 1
            threading.Thread(target=self._serve, args=(connection,), name=f"{self.name}-conn", daemon=True).start()

    def _serve(self, connection: _Connection) -> None:
        try:
            self._relay(connection)
        except OSError as exc:
            log.debug("proxy=%s connection ended: %s", self.name, exc)
            connection.abort()
        finally:
            if connection.closed.is_set():
                self._forget(connection)

    def _forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _relay(self, connection: _Connection) -> None:
        if not self._wait_healed(connection):
            return
        head = b""
        action = PASS
        if self.http:
            head = self._read_head(connection.client)
            if not head:
                connection.close()
                return
            method, path = parse_request_line(head)
            with self._lock:
                self.request_heads.append(head.split(HEAD_END, 1)[0].decode("latin-1"))
            plan = self.http_plan
            action = plan.decide(method, path) if plan is not None and method else PASS
            if action.kind is HttpFaultKind.ERROR:
                connection.client.sendall(error_response(action.status))
                connection.close()
                return
        try:
            upstream = socket.create_connection(self.upstream, timeout=CONNECT_TIMEOUT_S)
        except OSError:
            with self._lock:
                self.stats.refused_upstream += 1
            connection.abort()
            return
        upstream.settimeout(None)
        connection.upstream = upstream
        if connection.closed.is_set():
            connection.abort()
            return
        mangler = ResponseMangler(action) if action is not PASS else None
        threading.Thread(target=self._pump, args=(connection, upstream, connection.client, "down", mangler, b""),
                         name=f"{self.name}-down", daemon=True).start()
        self._pump(connection, connection.client, upstream, "up", None, head)

    def _read_head(self, client: socket.socket) -> bytes:
        head = b""
        while HEAD_END not in head and len(head) < MAX_HEAD_BYTES:
            chunk = client.recv(CHUNK_BYTES)
            if not chunk:
                return b""
            head += chunk
        return head

    def _pump(self, connection: _Connection, source: socket.socket, sink: socket.socket, direction: str,
              mangler: ResponseMangler | None, first: bytes) -> None:
        """Reader half of one direction; starts the writer half."""
        chunks: queue.Queue[tuple[float, bytes, bool] | None] = queue.Queue()
        writer = threading.Thread(target=self._deliver, args=(connection, chunks, sink, direction),
                                  name=f"{self.name}-{direction}-send", daemon=True)
        writer.start()
        try:
            if first:
                chunks.put((time.monotonic() + self.conditions.latency_s, first, False))
            while not connection.closed.is_set():
                if not self._wait_healed(connection):
                    break
                try:
                    data = source.recv(CHUNK_BYTES)
                except OSError:
                    break
                if not data:
                    break
                finish = False
                if mangler is not None:
                    if mangler.done:
                        continue  # stalled or truncated: swallow the rest
                    data = mangler.feed(data)
                    finish = mangler.done and mangler.action.kind is HttpFaultKind.TRUNCATE
                if data or finish:
                    chunks.put((time.monotonic() + self.conditions.latency_s, data, finish))
            if mangler is not None and mangler.done and mangler.action.kind is HttpFaultKind.STALL:
                while not connection.client_done.wait(0.1) and not self._closed.is_set():
                    pass  # a stalled response ends only when the client gives up
        finally:
            if direction == "up":
                connection.client_done.set()
            chunks.put(None)

    def _deliver(self, connection: _Connection, chunks: queue.Queue[tuple[float, bytes, bool] | None],
                 sink: socket.socket, direction: str) -> None:
        """Writer half: sends each chunk when due, applying loss stalls, resets and bandwidth."""
        next_free = 0.0
        try:
            while True:
                item = chunks.get()
                if item is None:
                    if not connection.closed.is_set():
                        try:
                            sink.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                    return
                due, data, finish = item
                with self._lock:
                    conditions = LinkConditions(**self.conditions.__dict__)
                    lost = conditions.loss_rate > 0 and self._rng.random() < conditions.loss_rate
                    reset = conditions.reset_rate > 0 and self._rng.random() < conditions.reset_rate
                    self.stats.stalls += int(lost)
                    self.stats.resets += int(reset)
                if reset:
                    connection.abort()
                    return
                if lost:
                    due += conditions.loss_stall_s
                if conditions.bandwidth_bps > 0:
                    due = max(due, next_free)
                    next_free = due + len(data) / conditions.bandwidth_bps
                delay = due - time.monotonic()
                if delay > 0 and connection.closed.wait(delay):
                    return
                if not self._wait_healed(connection):
                    return
                if data:
                    sink.sendall(data)
                    with self._lock:
                        if direction == "up":
                            self.stats.bytes_up += len(data)
                        else:
                            self.stats.bytes_down += len(data)
                if finish:
                    connection.close()
                    return
        except OSError:
            connection.abort()
        finally:
            connection.direction_done()
            if connection.closed.is_set():
                self._forget(connection)

    def _wait_healed(self, connection: _Connection) -> bool:
        """Block while partitioned; False when the connection or the proxy closed meanwhile."""
        while not self._healed.wait(0.1):
            if connection.closed.is_set() or self._closed.is_set():
                return False
        return not connection.closed.is_set()


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


__all__ = ["FaultProxy", "HttpAction", "HttpFaultKind", "HttpFaultPlan", "LinkConditions", "ProxyStats"]
