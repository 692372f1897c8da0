"""FileRangeResponse at the ASGI level: large-chunk reads, the zero-copy extension when the
server offers it, HEAD, and a client that disconnects mid-transfer."""

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from fleet_server.api import file_range_response
from fleet_server.api.file_range_response import ZERO_COPY, FileRangeResponse

DATA = os.urandom(300_000)


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "artifact"
    path.write_bytes(DATA)
    return path


def scope(method: str = "GET", extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": "/x", "headers": [], "extensions": extensions or {}}


async def never_disconnect() -> dict[str, Any]:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


def run(response: FileRangeResponse, asgi_scope: dict[str, Any], receive: Any = never_disconnect,
        send: Any = None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def collect(message: dict[str, Any]) -> None:
        messages.append(message)

    asyncio.run(asyncio.wait_for(response(asgi_scope, receive, send or collect), 10))
    return messages


def test_a_range_is_sent_in_chunks_with_the_callers_headers(artifact: Path, monkeypatch) -> None:
    monkeypatch.setattr(file_range_response, "CHUNK_BYTES", 64 * 1024)
    headers = {"Content-Length": "200000", "Content-Range": f"bytes 1000-200999/{len(DATA)}"}
    messages = run(FileRangeResponse(artifact, 1000, 200_000, 206, headers), scope())
    start, *bodies = messages
    assert start["status"] == 206
    assert (b"content-length", b"200000") in start["headers"]
    assert (b"content-range", f"bytes 1000-200999/{len(DATA)}".encode()) in start["headers"]
    assert len(bodies) == 4  # 200,000 bytes in 64 KiB reads
    assert [body["more_body"] for body in bodies] == [True, True, True, False]
    assert b"".join(body["body"] for body in bodies) == DATA[1000:201_000]


def test_the_zero_copy_extension_gets_the_file_and_the_range(artifact: Path) -> None:
    seen: list[bytes] = []

    async def server_send(message: dict[str, Any]) -> None:
        if message["type"] == ZERO_COPY:  # what a server with sendfile would do with it
            handle = message["file"]
            seen.append(os.pread(handle.fileno(), message["count"], message["offset"]))
            assert message["more_body"] is False

    run(FileRangeResponse(artifact, 5, 100, 206, {"Content-Length": "100"}),
        scope(extensions={ZERO_COPY: {}}), send=server_send)
    assert seen == [DATA[5:105]]


def test_head_sends_headers_and_no_body(artifact: Path) -> None:
    messages = run(FileRangeResponse(artifact, 0, len(DATA), 200, {"Content-Length": str(len(DATA))}),
                   scope("HEAD"))
    assert [message["type"] for message in messages] == ["http.response.start", "http.response.body"]
    assert messages[1]["body"] == b"" and messages[1]["more_body"] is False


def test_a_disconnected_client_stops_the_transfer(artifact: Path, monkeypatch) -> None:
    monkeypatch.setattr(file_range_response, "CHUNK_BYTES", 1024)
    sent: list[dict[str, Any]] = []
    disconnected = asyncio.Event()

    async def slow_client_send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) == 3:
            disconnected.set()  # the client goes away while it is being sent to
        await asyncio.sleep(0.01)

    async def receive() -> dict[str, Any]:
        await disconnected.wait()
        return {"type": "http.disconnect"}

    run(FileRangeResponse(artifact, 0, len(DATA), 200, {"Content-Length": str(len(DATA))}), scope(),
        receive=receive, send=slow_client_send)
    assert 3 <= len(sent) < 10  # stopped soon after, not all 293 chunks
