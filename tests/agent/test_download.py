"""The resumable downloader against a local HTTP server with Range support and injected faults."""

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.download import Downloader, DownloadSettings, PermanentDownloadError, backoff_delay, file_sha256
from agent.errors import DeploymentCancelledError, DownloadError, DownloadExpiredError
from agent.protocol.errors import ArtifactMismatchError
from tests.agent.artifact_server import ArtifactServer
from tests.agent.signing import onnx_variant

DATA = os.urandom(200_000)
FAST = DownloadSettings(stall_timeout_s=0.5, retry_base_s=0.01, retry_max_s=0.05, max_attempts=0)


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with ArtifactServer() as server:
        server.add(DATA)
        yield server


def downloader(server: ArtifactServer, tmp_path: Path, settings: DownloadSettings = FAST,
               token: str = "device-secret") -> Downloader:
    return Downloader(server.url, token, tmp_path / "downloads", settings)


def fetch(loader: Downloader, data: bytes = DATA, expires_in_s: float = 30.0) -> Path:
    return loader.fetch(onnx_variant(data), expires_in_s, threading.Event())


def test_fetches_the_whole_artifact_with_the_device_credential(server: ArtifactServer, tmp_path: Path) -> None:
    part = fetch(downloader(server, tmp_path))
    assert part.read_bytes() == DATA
    assert file_sha256(part) == (len(DATA), onnx_variant(DATA).sha256)
    assert server.requests[0]["authorization"] == "Bearer device-secret"
    assert server.range_headers() == [None]


def test_resumes_after_a_cut_connection_with_a_range_request(server: ArtifactServer, tmp_path: Path) -> None:
    server.faults.cut_after_bytes = 70_000
    part = fetch(downloader(server, tmp_path))
    assert part.read_bytes() == DATA
    ranges = server.range_headers()
    assert len(ranges) == 2 and ranges[0] is None
    offset = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= 70_000
    assert ranges[1] == f"bytes={offset}-"


def test_resumes_from_a_partial_file_left_by_an_earlier_run(server: ArtifactServer, tmp_path: Path) -> None:
    loader = downloader(server, tmp_path)
    loader.downloads_dir.mkdir(parents=True)
    loader.part_path(onnx_variant(DATA).sha256).write_bytes(DATA[:12_345])
    assert fetch(loader).read_bytes() == DATA
    assert server.range_headers() == ["bytes=12345-"]


def test_a_complete_partial_file_needs_no_request(server: ArtifactServer, tmp_path: Path) -> None:
    loader = downloader(server, tmp_path)
    loader.downloads_dir.mkdir(parents=True)
    loader.part_path(onnx_variant(DATA).sha256).write_bytes(DATA)
    assert fetch(loader).read_bytes() == DATA
    assert server.requests == []


def test_restarts_when_the_server_ignores_the_range(server: ArtifactServer, tmp_path: Path) -> None:
    server.faults.ignore_range = True
    loader = downloader(server, tmp_path)
    loader.downloads_dir.mkdir(parents=True)
    loader.part_path(onnx_variant(DATA).sha256).write_bytes(b"x" * 1000)
    assert fetch(loader).read_bytes() == DATA


def test_a_stalled_transfer_is_retried_and_resumed(server: ArtifactServer, tmp_path: Path) -> None:
    server.faults.stall_after_bytes = 50_000
    server.faults.stall_seconds = 3.0
    part = fetch(downloader(server, tmp_path))
    assert part.read_bytes() == DATA
    ranges = server.range_headers()
    assert len(ranges) == 2 and ranges[1] is not None and ranges[1] != "bytes=0-"


def test_more_bytes_than_declared_are_refused(server: ArtifactServer, tmp_path: Path) -> None:
    server.faults.extra_bytes = 10
    loader = downloader(server, tmp_path)
    with pytest.raises(ArtifactMismatchError, match="more than the declared"):
        fetch(loader)
    assert not loader.part_path(onnx_variant(DATA).sha256).exists()


def test_a_different_total_size_is_an_artifact_mismatch(server: ArtifactServer, tmp_path: Path) -> None:
    shorter = DATA[:-1]
    server.blobs[onnx_variant(shorter).sha256] = DATA  # the server holds other bytes under that hash
    with pytest.raises(ArtifactMismatchError, match=f"release says {len(shorter)}"):
        fetch(downloader(server, tmp_path), shorter)


def test_wrong_bytes_download_but_fail_verification(server: ArtifactServer, tmp_path: Path) -> None:
    server.faults.flip_byte = 1000
    part = fetch(downloader(server, tmp_path))
    length, digest = file_sha256(part)
    assert length == len(DATA) and digest != onnx_variant(DATA).sha256


@pytest.mark.parametrize("status", [401, 403, 404])
def test_permanent_http_errors_fail_fast(server: ArtifactServer, tmp_path: Path, status: int) -> None:
    server.faults.status = status
    with pytest.raises(PermanentDownloadError, match=f"HTTP {status}"):
        fetch(downloader(server, tmp_path))
    assert len(server.requests) == 1


def test_server_errors_are_retried_until_the_attempt_cap(server: ArtifactServer, tmp_path: Path) -> None:
    server.faults.status = 503
    settings = DownloadSettings(stall_timeout_s=0.5, retry_base_s=0.01, retry_max_s=0.02, max_attempts=3)
    with pytest.raises(DownloadError, match="gave up after 3 attempts"):
        fetch(downloader(server, tmp_path, settings))
    assert len(server.requests) == 3


def test_retries_stop_when_the_directive_expires(server: ArtifactServer, tmp_path: Path) -> None:
    server.faults.status = 503
    settings = DownloadSettings(stall_timeout_s=0.5, retry_base_s=0.05, retry_max_s=0.1, max_attempts=0)
    with pytest.raises(DownloadExpiredError):
        fetch(downloader(server, tmp_path, settings), expires_in_s=0.5)
    assert len(server.requests) >= 2


def test_unreachable_server_is_retried(tmp_path: Path) -> None:
    settings = DownloadSettings(stall_timeout_s=0.5, retry_base_s=0.01, retry_max_s=0.01, max_attempts=2)
    loader = Downloader("http://127.0.0.1:9", "t", tmp_path / "downloads", settings)
    with pytest.raises(DownloadError, match="gave up after 2 attempts.*cannot reach"):
        fetch(loader)


def test_cancellation_stops_the_retry_loop(server: ArtifactServer, tmp_path: Path) -> None:
    server.faults.status = 503
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DeploymentCancelledError):
        downloader(server, tmp_path).fetch(onnx_variant(DATA), 30.0, cancel)


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    low = [backoff_delay(n, 1.0, 60.0, rng=lambda a, b: a) for n in range(1, 9)]
    high = [backoff_delay(n, 1.0, 60.0, rng=lambda a, b: b) for n in range(1, 9)]
    assert high == [1, 2, 4, 8, 16, 32, 60, 60]
    assert low == [d / 2 for d in high]
    assert all(0.5 <= backoff_delay(1, 1.0, 60.0) <= 1.0 for _ in range(20))


def test_discard_all_except_keeps_only_the_active_part(tmp_path: Path) -> None:
    loader = Downloader("http://127.0.0.1:9", "t", tmp_path, FAST)
    for name in ("a" * 64, "b" * 64):
        loader.part_path(name).write_bytes(b"x")
    loader.discard_all_except("a" * 64)
    assert [p.name for p in tmp_path.iterdir()] == [f"{'a' * 64}.part"]
