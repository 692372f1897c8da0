"""The fault toolkit itself: the proxy relays faithfully and injects exactly the faults asked for."""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_server.processes import wait_until
from tests.faults.toolkit import FaultToolkitError
from tests.faults.toolkit.disk import SmallDisk, mount_capability
from tests.faults.toolkit.http_faults import (
    PASS,
    HttpAction,
    HttpFaultKind,
    HttpFaultPlan,
    HttpFaultRule,
    ResponseMangler,
    parse_request_line,
)
from tests.faults.toolkit.netns import KERNEL, PROXY, probe
from tests.faults.toolkit.proxy import FaultProxy

BODY = bytes(range(256)) * 400  # 102,400 bytes
ARTIFACT = "/api/v1/artifacts/" + "a" * 64


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        _Handler.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.hits = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def echo() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except ConnectionResetError:
                pass  # the proxy resets connections on purpose

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def stream_ended(sock: socket.socket) -> bool:
    """The peer reset (or closed) the connection: nothing more arrives."""
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


# -- pure rules -------------------------------------------------------------------------


def test_plan_fires_by_position_period_and_limit() -> None:
    error = HttpAction(HttpFaultKind.ERROR, status=503)
    cut = HttpAction(HttpFaultKind.TRUNCATE, body_bytes=10)
    plan = HttpFaultPlan([HttpFaultRule(error, nth=frozenset({1})), HttpFaultRule(cut, every=2, limit=2)])
    actions = [plan.decide("GET", ARTIFACT) for _ in range(6)]
    assert actions == [error, cut, PASS, cut, PASS, PASS]
    assert plan.decide("GET", "/api/v1/health") is PASS
    assert plan.decide("POST", ARTIFACT) is PASS
    assert plan.counts() == {"error": 1, "truncate": 2, "pass": 5}


def test_plan_probability_is_reproducible_from_the_seed() -> None:
    def draws(seed: int) -> list[HttpFaultKind]:
        plan = HttpFaultPlan([HttpFaultRule(HttpAction(HttpFaultKind.ERROR), probability=0.5)], seed=seed)
        return [plan.decide("GET", ARTIFACT).kind for _ in range(40)]

    assert draws(7) == draws(7)
    assert 5 < draws(7).count(HttpFaultKind.ERROR) < 35


def test_request_line_parsing() -> None:
    assert parse_request_line(b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n") == ("GET", "/x?y=1")
    assert parse_request_line(b"\x10\x20MQTT") == ("", "")


@pytest.mark.parametrize("split", [1, 7, 40, 200])
def test_mangler_truncates_and_corrupts_the_body_only(split: int) -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + bytes(100)
    pieces = [response[i:i + split] for i in range(0, len(response), split)]

    cut = ResponseMangler(HttpAction(HttpFaultKind.TRUNCATE, body_bytes=30))
    out = b"".join(cut.feed(piece) for piece in pieces)
    assert out == response[: response.index(b"\r\n\r\n") + 4 + 30] and cut.done

    corrupt = ResponseMangler(HttpAction(HttpFaultKind.CORRUPT, body_bytes=99))
    out = b"".join(corrupt.feed(piece) for piece in pieces)
    assert len(out) == len(response) and out[-1] == 0xFF and out[:-1] == response[:-1]


# -- the proxy ----------------------------------------------------------------------------


def test_proxy_relays_bytes_intact_under_latency_loss_and_bandwidth(echo: int) -> None:
    with FaultProxy(echo, seed=3) as proxy:
        proxy.shape(latency_s=0.01, loss_rate=0.3, loss_stall_s=0.02, bandwidth_bps=2_000_000)
        payload = bytes(range(256)) * 1000
        with socket.create_connection(("127.0.0.1", proxy.port)) as client:
            client.sendall(payload)
            assert recv_exactly(client, len(payload)) == payload
        assert proxy.stats.stalls > 0
        # The proxy counts a chunk after handing it on, so the client can be a step ahead of the counter.
        wait_until(lambda: proxy.stats.bytes_down == len(payload), 5, "the proxy to count every byte relayed")
        assert proxy.stats.bytes_up == proxy.stats.bytes_down == len(payload)


def test_partition_holds_traffic_until_healed(echo: int) -> None:
    with FaultProxy(echo) as proxy, socket.create_connection(("127.0.0.1", proxy.port)) as client:
        client.sendall(b"before")
        assert recv_exactly(client, 6) == b"before"
        proxy.partition()
        client.sendall(b"during")
        client.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.recv(6)
        proxy.heal()
        client.settimeout(10)
        assert recv_exactly(client, 6) == b"during"


def test_reset_connections_and_random_resets(echo: int) -> None:
    with FaultProxy(echo) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port))
        client.sendall(b"x")
        assert recv_exactly(client, 1) == b"x"
        assert proxy.reset_connections() == 1
        assert stream_ended(client)
        client.close()
        proxy.shape(reset_rate=1.0)
        with socket.create_connection(("127.0.0.1", proxy.port)) as second:
            second.sendall(b"y")
            assert stream_ended(second)
        assert proxy.stats.resets >= 2


def test_http_errors_truncation_and_wrong_bytes(upstream: int) -> None:
    plan = HttpFaultPlan([
        HttpFaultRule(HttpAction(HttpFaultKind.ERROR, status=503), nth=frozenset({1})),
        HttpFaultRule(HttpAction(HttpFaultKind.TRUNCATE, body_bytes=5000), nth=frozenset({2})),
        HttpFaultRule(HttpAction(HttpFaultKind.CORRUPT, body_bytes=777), nth=frozenset({3})),
    ])
    with FaultProxy(upstream, http_plan=plan) as proxy:
        with pytest.raises(urllib.error.HTTPError) as refused:
            fetch(proxy.url + ARTIFACT)
        assert refused.value.code == 503 and _Handler.hits == []
        with pytest.raises(Exception) as cut:  # http.client.IncompleteRead
            fetch(proxy.url + ARTIFACT)
        assert "IncompleteRead" in type(cut.value).__name__ or "5000" in str(cut.value)
        wrong = fetch(proxy.url + ARTIFACT)
        assert len(wrong) == len(BODY) and hashlib.sha256(wrong).digest() != hashlib.sha256(BODY).digest()
        assert wrong[777] == BODY[777] ^ 0xFF
        assert fetch(proxy.url + ARTIFACT) == BODY
        assert plan.counts() == {"error": 1, "truncate": 1, "corrupt": 1, "pass": 1}
        assert len(proxy.request_heads) == 4 and proxy.request_heads[0].startswith("GET " + ARTIFACT)


def test_stalled_response_leaves_the_client_waiting(upstream: int) -> None:
    plan = HttpFaultPlan([HttpFaultRule(HttpAction(HttpFaultKind.STALL, body_bytes=100), nth=frozenset({1}))])
    with FaultProxy(upstream, http_plan=plan) as proxy:
        with pytest.raises(TimeoutError), urllib.request.urlopen(proxy.url + ARTIFACT, timeout=0.5) as response:
            response.read()
        assert fetch(proxy.url + ARTIFACT) == BODY


# -- machine capabilities -----------------------------------------------------------------


def test_network_probe_names_a_mechanism() -> None:
    capabilities = probe()
    assert capabilities.mechanism in (KERNEL, PROXY)
    assert capabilities.kernel_faults == (capabilities.mechanism == KERNEL)
    assert capabilities.detail
    assert probe() is capabilities  # probed once


def test_small_disk_fills_up_and_frees(tmp_path: Path) -> None:
    if mount_capability() is not None:
        with pytest.raises(FaultToolkitError):
            SmallDisk(tmp_path / "disk", 4 * 1024 * 1024).mount()
        return
    with SmallDisk(tmp_path / "disk", 4 * 1024 * 1024) as disk:
        assert disk.mechanism in ("tmpfs", "loop-ext4")
        left = disk.fill(leave_free=64 * 1024)
        assert left <= 128 * 1024
        with pytest.raises(OSError) as full, open(disk.path / "big", "wb") as handle:
            handle.write(b"\0" * (512 * 1024))
            handle.flush()
            os.fsync(handle.fileno())
        assert full.value.errno == errno.ENOSPC
        (disk.path / "big").unlink()
        disk.unfill()
        assert disk.free_bytes() > 3 * 1024 * 1024
    assert not (tmp_path / "disk").is_mount()
