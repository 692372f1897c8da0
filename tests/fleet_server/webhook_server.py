"""A local HTTP server that records webhook calls (and can fail the first ones)."""

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookServer:
    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with server.lock:
                    failing = server.fail_first > 0
                    server.fail_first -= 1 if failing else 0
                    if not failing:
                        server.calls.append({"path": self.path, "body": json.loads(body),
                                             "event": self.headers.get("X-EdgeFleet-Event")})
                self.send_response(503 if failing else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def events(self, path: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [call["body"] for call in self.calls if path is None or call["path"] == path]


@contextmanager
def webhook_server(fail_first: int = 0) -> Iterator[WebhookServer]:
    server = WebhookServer(fail_first)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
