"""sd_notify with the standard library: datagrams to NOTIFY_SOCKET, watchdog interval, no-op without it."""

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sdnotify import Notifier, socket_address, watchdog_interval_s


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def test_ready_watchdog_and_stopping_arrive_as_datagrams(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled and notifier.ready("device d1") and notifier.watchdog() and notifier.stopping()
    assert [sock.recv(4096) for _ in range(3)] == [b"READY=1\nSTATUS=device d1", b"WATCHDOG=1", b"STOPPING=1"]


def test_abstract_socket_names(tmp_path: Path) -> None:
    name = f"edgefleet-test-{os.getpid()}"
    assert socket_address("@" + name) == b"\0" + name.encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval_s is None
    assert notifier.ready() is False and notifier.watchdog() is False


def test_a_vanished_manager_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).watchdog() is False
    assert "sd_notify_failed" in caplog.text


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "90000000"}, 45.0),
    ({"WATCHDOG_USEC": "90000000", "WATCHDOG_PID": "100"}, 45.0),
    ({"WATCHDOG_USEC": "90000000", "WATCHDOG_PID": "101"}, None),  # armed for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_the_timeout_for_this_process(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(env, pid=100) == expected
