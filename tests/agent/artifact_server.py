"""A local stand-in for the fleet server's device-facing HTTP API, for agent tests.

``GET /api/v1/artifacts/{sha256}`` serves blobs with Range support; faults can
be injected per test: cut the connection after N bytes, stall, send extra
bytes, corrupt a byte, or answer a status. Every request's headers are
recorded so tests can assert on ``Range``. ``POST /api/v1/devices/enroll``
follows the enrollment contract (201/200, 401 on a bad bootstrap token, 422).
Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RANGE = re.compile(r"bytes=(\d+)-")


@dataclass
class Faults:
    cut_after_bytes: int | None = None  # close the connection after this many body bytes (once)
    stall_after_bytes: int | None = None  # stop sending (keep the socket open) after this many bytes (once)
    stall_seconds: float = 5.0
    extra_bytes: int = 0  # append bytes beyond the artifact (no Content-Length)
    flip_byte: int | None = None  # corrupt the byte at this offset
    status: int | None = None  # answer this status instead of the file
    ignore_range: bool = False  # answer 200 with the whole file even when a Range was asked
    chunk_delay_s: float = 0.0  # send the body in 4 KiB pieces with this pause between them (a slow link)
    slow_blobs: set[str] = field(default_factory=set)  # limit chunk_delay_s to these sha256s (empty: all)
    used: set[str] = field(default_factory=set)

    def once(self, name: str) -> bool:
        if name in self.used:
            return False
        self.used.add(name)
        return True


class ArtifactServer:
    def __init__(self, token: str = "device-secret", bootstrap_token: str = "bootstrap",
                 root_document: dict | None = None, mqtt_url: str = "mqtt://127.0.0.1:1") -> None:
        self.token = token
        self.bootstrap_token = bootstrap_token
        self.root_document = root_document
        self.mqtt_url = mqtt_url
        self.enrollments: list[dict] = []
        self.certify: Callable[[dict], dict] | None = None  # extra answer fields (certificate) for a request
        self.blobs: dict[str, bytes] = {}
        self.requests: list[dict[str, str]] = []
        self.faults = Faults()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def add(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        self.blobs[sha256] = data
        return sha256

    def range_headers(self) -> list[str | None]:
        return [request.get("range") for request in self.requests]

    def __enter__(self) -> ArtifactServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append({key.lower(): value for key, value in self.headers.items()})
                faults = server.faults
                sha256 = self.path.rsplit("/", 1)[-1]
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    return self._plain(401)
                if faults.status is not None:
                    return self._plain(faults.status)
                if sha256 not in server.blobs or not self.path.startswith("/api/v1/artifacts/"):
                    return self._plain(404)
                data = bytearray(server.blobs[sha256])
                if faults.flip_byte is not None:
                    data[faults.flip_byte] ^= 0x01
                start = 0
                match = RANGE.fullmatch(self.headers.get("Range", ""))
                if match and not faults.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        return self._plain(416, {"Content-Range": f"bytes */{len(data)}"})
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = bytes(data[start:])
                if faults.extra_bytes:
                    body += b"\0" * faults.extra_bytes
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", f'"{sha256}"')
                self.end_headers()
                if faults.cut_after_bytes is not None and faults.once("cut"):
                    self.wfile.write(body[:faults.cut_after_bytes])
                    self.wfile.flush()
                    self.close_connection = True
                    return None
                if faults.stall_after_bytes is not None and faults.once("stall"):
                    self.wfile.write(body[:faults.stall_after_bytes])
                    self.wfile.flush()
                    time.sleep(faults.stall_seconds)
                    self.close_connection = True
                    return None
                if faults.chunk_delay_s and (not faults.slow_blobs or sha256 in faults.slow_blobs):
                    try:
                        for offset in range(0, len(body), 4096):
                            self.wfile.write(body[offset:offset + 4096])
                            self.wfile.flush()
                            time.sleep(faults.chunk_delay_s)
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True
                    return None
                self.wfile.write(body)
                return None

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/api/v1/devices/enroll":
                    return self._plain(404)
                request = json.loads(body)
                if request.get("bootstrap_token") != server.bootstrap_token:
                    return self._plain(401)
                if not isinstance(request.get("ram_mb"), int) or not request.get("device_id"):
                    return self._json(422, {"detail": [{"loc": ["body", "ram_mb"], "msg": "bad value"}]})
                known = any(e["device_id"] == request["device_id"] for e in server.enrollments)
                server.enrollments.append(request)
                return self._json(200 if known else 201, {
                    "device_id": request["device_id"], "credential": server.token, "mqtt_url": server.mqtt_url,
                    "root": server.root_document, "artifact_base_url": None,
                    **(server.certify(request) if server.certify else {}),
                })

            def _json(self, status: int, document: object) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _plain(self, status: int, headers: dict[str, str] | None = None) -> None:
                body = b'{"detail":"test"}'
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
