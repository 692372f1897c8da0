"""Artifact transfers under uvicorn: many slow downloads at once hold no database
connection (the pool is for API calls, not for clients on slow links), on SQLite and
PostgreSQL."""

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from fleet_server.app import create_app
from fleet_server.processes import LOOPBACK, free_port, wait_until
from tests.fleet_server.conftest import ADMIN_TOKEN, BOOTSTRAP_TOKEN, make_settings

ARTIFACT_BYTES = 24 * 1024 * 1024  # far more than the socket buffers: a client that does not read stalls the send
SLOW_CLIENTS = 20  # more than the pool's 5 + 10 connections


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[tuple[str, Any]]:
    app = create_app(make_settings(tmp_path / "data", database_url=database_url))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "uvicorn to start")
        yield f"http://{LOOPBACK}:{port}", app.state.runtime
    finally:
        server.should_exit = True
        thread.join(30)


def test_slow_downloads_hold_no_database_connection(served: tuple[str, Any]) -> None:
    url, runtime = served
    data = os.urandom(ARTIFACT_BYTES)
    sha256 = hashlib.sha256(data).hexdigest()
    path = runtime.artifacts.path_for(sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    enrolled = httpx.post(f"{url}/api/v1/devices/enroll", timeout=20, json={
        "device_id": "slow-link-1", "bootstrap_token": BOOTSTRAP_TOKEN, "arch": "x86_64", "ram_mb": 1024,
        "runtimes": ["onnxruntime"], "agent_version": "0.1.0", "tags": []})
    assert enrolled.status_code == 201, enrolled.text
    credential = enrolled.json()["credential"]  # a device: authenticating it reads the database

    request = (f"GET /api/v1/artifacts/{sha256} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {credential}\r\n"
               "Range: bytes=0-\r\n\r\n").encode()
    clients = []
    try:
        for _ in range(SLOW_CLIENTS):
            client = socket.create_connection((LOOPBACK, int(url.rsplit(":", 1)[1])))
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.sendall(request)
            clients.append(client)
        first = clients[0].recv(256)
        assert first.startswith(b"HTTP/1.1 206"), first
        time.sleep(1.0)  # every transfer is under way and stalled on its client
        assert runtime.engine.pool.checkedout() == 0
        started = time.monotonic()
        answer = httpx.get(f"{url}/api/v1/models", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=20)
        assert answer.status_code == 200 and time.monotonic() - started < 15
    finally:
        for client in clients:
            client.close()
