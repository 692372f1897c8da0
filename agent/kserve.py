"""Local inference endpoint: the Open Inference Protocol (KServe v2) REST API on stdlib http.server.

    GET  /v2/health/live                                   200 {"live": true}
    GET  /v2/health/ready                                  200 {"ready": true} | 400 {"ready": false}
    GET  /v2                                               server metadata
    GET  /v2/models/{name}[/versions/{v}]                  model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready            200 {"name", "ready": true}
    POST /v2/models/{name}[/versions/{v}]/infer            inference

Errors are ``{"error": "..."}``: 400 for bad requests (JSON, tensors, body size),
404 for unknown models and paths, 500 when the runtime itself fails.
"""

import json
import logging
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import agent
from agent.errors import InferenceError, InvalidInferenceRequestError, ModelNotReadyError
from agent.inference import InferenceService
from agent.kserve_codec import decode_infer_request, encode_infer_response, model_metadata

log = logging.getLogger(__name__)

SERVER_NAME = "edgefleet-agent"
MODEL_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<action>/ready|/infer)?")


class KServeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = SERVER_NAME
    server: "KServeHTTPServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("event=http_request client=%s %s", self.client_address[0], format % args)

    def _send(self, status: int, document: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(document, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": message}, headers)

    def _path(self) -> str:
        path = urllib.parse.urlsplit(self.path).path
        return urllib.parse.unquote(path.rstrip("/") or "/")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        service = self.server.service
        path = self._path()
        if path == "/v2/health/live":
            self._send(200, {"live": True})
        elif path == "/v2/health/ready":
            self._send(200 if service.ready else 400, {"ready": service.ready})
        elif path == "/v2":
            self._send(200, {"name": SERVER_NAME, "version": agent.__version__, "extensions": []})
        elif match := MODEL_PATH.fullmatch(path):
            try:
                served = service.resolve(match["name"], match["version"])
            except ModelNotReadyError as exc:
                self._error(404, str(exc))
                return
            if match["action"] == "/infer":
                self._error(405, "use POST for inference", {"Allow": "POST"})
            elif match["action"] == "/ready":
                self._send(200, {"name": served.name, "ready": True})
            else:
                self._send(200, model_metadata(served))
        else:
            self._error(404, f"unknown path {path}")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        body = self._read_body()
        if body is None:
            return
        path = self._path()
        match = MODEL_PATH.fullmatch(path)
        if not match or match["action"] != "/infer":
            self._error(404 if not match else 405, f"no POST endpoint at {path}")
            return
        try:
            served = self.server.service.resolve(match["name"], match["version"])
            request = decode_infer_request(body, served, self.server.max_request_bytes)
            self.server.service.validate(served, request.inputs)
            outputs = self.server.service.run(served, request.inputs)
            self._send(200, encode_infer_response(served, request, outputs))
        except ModelNotReadyError as exc:
            self._error(404, str(exc))
        except InvalidInferenceRequestError as exc:
            self._error(400, str(exc))
        except InferenceError as exc:
            log.warning("event=inference_failed model=%s error=%r", match["name"], str(exc))
            self._error(500, str(exc))
        except Exception:
            log.exception("event=inference_crashed model=%s", match["name"])
            self._error(500, "internal error while running the model")

    def _read_body(self) -> bytes | None:
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self.close_connection = True
            self._error(411 if self.headers.get("Transfer-Encoding") else 400, "a Content-Length header is required")
            return None
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._error(400, "invalid Content-Length")
            return None
        if length > self.server.max_request_bytes:
            self.close_connection = True
            self._error(400, f"request body is {length} bytes, the limit is {self.server.max_request_bytes}")
            return None
        return self.rfile.read(length)


class KServeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: InferenceService, max_request_bytes: int) -> None:
        self.service = service
        self.max_request_bytes = max_request_bytes
        super().__init__(address, KServeHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("event=http_handler_error client=%s", client_address[0])


class KServeServer:
    """Runs the endpoint on a background thread."""

    def __init__(self, service: InferenceService, host: str = "127.0.0.1", port: int = 8080,
                 max_request_bytes: int = 16 * 1024 * 1024) -> None:
        self._httpd = KServeHTTPServer((host, port), service, max_request_bytes)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "KServeServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="kserve-http", daemon=True)
        self._thread.start()
        log.info("event=inference_server_started url=%s", self.url)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()
        log.info("event=inference_server_stopped")

