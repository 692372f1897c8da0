"""Resumable artifact download over HTTP (stdlib ``urllib``; no extra deps on the device).

Bytes land in ``downloads/<sha256>.part``. Every attempt asks for
``Range: bytes=<size of the part file>-``, so an interrupted transfer resumes
where it stopped instead of starting over. Failed attempts are retried with
exponential backoff and jitter until the directive expires, the deployment is
cancelled, or ``max_attempts`` attempts in a row made no progress. A transfer
that delivers no byte for ``stall_timeout_s`` counts as failed. The server may
never deliver more than the signed length: that, or a different total size,
is an ``ArtifactMismatchError`` (the bytes cannot be the signed artifact).
Cancellation (a newer directive, shutdown) is checked between chunks, so it
takes effect at the next chunk, or after ``stall_timeout_s`` on a dead link.
"""

import hashlib
import http.client
import logging
import os
import random
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import DeploymentCancelledError, DownloadError, DownloadExpiredError, DownloadStalledError
from agent.protocol.errors import ArtifactMismatchError
from agent.protocol.metadata import ArtifactVariant

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
RETRYABLE_STATUS = frozenset({408, 425, 429})


class PermanentDownloadError(DownloadError):
    """The server refused the artifact in a way retrying cannot fix (401, 403, 404, ...)."""


@dataclass(frozen=True)
class DownloadSettings:
    stall_timeout_s: float = 30.0
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0
    max_attempts: int = 0  # failed attempts in a row without progress; 0: no cap


def backoff_delay(failures: int, base: float, cap: float,
                  rng: Callable[[float, float], float] = random.uniform) -> float:
    """Exponential backoff with "equal jitter": a delay in [d/2, d], d = min(cap, base * 2**(failures-1))."""
    delay = min(cap, base * (2 ** max(0, failures - 1)))
    return rng(delay / 2, delay)


def file_sha256(path: Path) -> tuple[int, str]:
    """(length, hex sha256) of a file, streamed."""
    digest = hashlib.sha256()
    length = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
            length += len(chunk)
    return length, digest.hexdigest()


class Downloader:
    """Fetches content-addressed artifacts into ``downloads_dir``."""

    def __init__(self, base_url: str, credential: str, downloads_dir: Path, settings: DownloadSettings,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context  # https: the system's CAs plus the fleet CA (agent.identity)
        self.base_url = base_url.rstrip("/")
        self.credential = credential
        self.downloads_dir = Path(downloads_dir)
        self.settings = settings

    def part_path(self, sha256: str) -> Path:
        return self.downloads_dir / f"{sha256}.part"

    def url_for(self, sha256: str) -> str:
        return f"{self.base_url}/api/v1/artifacts/{sha256}"

    def discard(self, sha256: str) -> None:
        self.part_path(sha256).unlink(missing_ok=True)

    def discard_all_except(self, keep: str | None) -> None:
        for part in self.downloads_dir.glob("*.part"):
            if part.name != f"{keep}.part":
                part.unlink(missing_ok=True)

    def fetch(self, variant: ArtifactVariant, expires_in_s: float, cancel: threading.Event) -> Path:
        """Download ``variant`` completely (resuming any partial file); return the part file."""
        self.downloads_dir.mkdir(parents=True, exist_ok=True)
        part = self.part_path(variant.sha256)
        deadline = time.monotonic() + expires_in_s
        failures = 0
        attempt = 0
        while True:
            if cancel.is_set():
                raise DeploymentCancelledError("download cancelled")
            if time.monotonic() >= deadline:
                raise DownloadExpiredError("the directive expired before the download completed")
            before = _size(part)
            attempt += 1
            try:
                self._attempt(variant, part, deadline, cancel, attempt)
                return part
            except (ArtifactMismatchError, PermanentDownloadError):
                self.discard(variant.sha256)
                raise
            except (DeploymentCancelledError, DownloadExpiredError):
                raise
            except (DownloadError, OSError, http.client.HTTPException) as exc:
                failures = 0 if _size(part) > before else failures + 1
                if self.settings.max_attempts and failures >= self.settings.max_attempts:
                    raise DownloadError(f"gave up after {failures} attempts without progress: {exc}") from exc
                delay = min(backoff_delay(max(failures, 1), self.settings.retry_base_s, self.settings.retry_max_s),
                            max(0.0, deadline - time.monotonic()))
                log.warning("event=download_retry sha256=%s attempt=%d have=%d error=%r delay_s=%.2f",
                            variant.sha256[:12], attempt, _size(part), str(exc), delay)
                cancel.wait(delay)

    def _attempt(self, variant: ArtifactVariant, part: Path, deadline: float, cancel: threading.Event,
                 attempt: int) -> None:
        length = variant.length
        offset = _size(part)
        if offset > length:
            part.unlink()
            offset = 0
        if offset == length:
            return
        headers = {"Authorization": f"Bearer {self.credential}", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        log.info("event=download_attempt sha256=%s attempt=%d offset=%d length=%d",
                 variant.sha256[:12], attempt, offset, length)
        request = urllib.request.Request(self.url_for(variant.sha256), headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.settings.stall_timeout_s,
                                              context=self.ssl_context)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416:
                part.unlink(missing_ok=True)
                raise DownloadError("server could not satisfy the range; restarting from byte 0") from None
            if exc.code in RETRYABLE_STATUS or exc.code >= 500:
                raise DownloadError(f"artifact server answered HTTP {exc.code}") from None
            raise PermanentDownloadError(
                f"artifact server answered HTTP {exc.code} for {variant.sha256[:12]}") from None
        except TimeoutError:
            raise DownloadStalledError(f"no response within {self.settings.stall_timeout_s}s") from None
        except urllib.error.URLError as exc:
            raise DownloadError(f"cannot reach the artifact server: {exc.reason}") from None
        with response:
            offset, mode = self._check_response(response, offset, length)
            self._receive(response, part, mode, offset, length, deadline, cancel)

    @staticmethod
    def _check_response(response: http.client.HTTPResponse, offset: int, length: int) -> tuple[int, str]:
        if response.status == 206:
            match = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if not match:
                raise DownloadError("206 response without a valid Content-Range")
            start, total = int(match.group(1)), match.group(3)
            if total != "*" and int(total) != length:
                raise ArtifactMismatchError(f"server says the artifact is {total} bytes, release says {length}")
            if start != offset:
                raise DownloadError(f"server resumed at byte {start}, expected {offset}")
            return offset, "ab"
        if response.status == 200:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) != length:
                raise ArtifactMismatchError(f"server sends {declared} bytes, release says {length}")
            return 0, "wb"
        raise DownloadError(f"unexpected HTTP status {response.status}")

    def _receive(self, response: http.client.HTTPResponse, part: Path, mode: str, offset: int, length: int,
                 deadline: float, cancel: threading.Event) -> None:
        written = offset
        with open(part, mode) as handle:
            try:
                while True:
                    if cancel.is_set():
                        raise DeploymentCancelledError("download cancelled")
                    if time.monotonic() >= deadline:
                        raise DownloadExpiredError("the directive expired during the download")
                    try:
                        chunk = response.read1(min(CHUNK_BYTES, length - written + 1))
                    except TimeoutError:
                        raise DownloadStalledError(
                            f"no data for {self.settings.stall_timeout_s}s at byte {written}") from None
                    if not chunk:
                        break
                    if written + len(chunk) > length:
                        handle.truncate(0)
                        raise ArtifactMismatchError(f"server sent more than the declared {length} bytes")
                    handle.write(chunk)
                    written += len(chunk)
            finally:
                handle.flush()
                os.fsync(handle.fileno())
        if written < length:
            raise DownloadError(f"connection closed at byte {written} of {length}")
        log.info("event=download_complete bytes=%d", written)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
