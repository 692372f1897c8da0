"""A loopback HTTP proxy that cuts the first artifact download mid-body.

It records each request's head so a test can assert that the agent resumed
with a ``Range`` header instead of starting again from zero.
"""

import socket
import threading
from dataclasses import dataclass, field

ARTIFACT_PATH = b"/api/v1/artifacts/"


@dataclass
class CuttingProxy:
    upstream_port: int
    cut_after_bytes: int
    request_heads: list[str] = field(default_factory=list)
    cuts: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def artifact_requests(self) -> list[str]:
        with self._lock:
            return [head for head in self.request_heads if ARTIFACT_PATH.decode() in head.split("\r\n")[0]]

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(downstream,), daemon=True).start()

    def _serve(self, downstream: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        with downstream, upstream:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = downstream.recv(65536)
                if not chunk:
                    return
                head += chunk
            upstream.sendall(head)
            head_text = head.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            with self._lock:
                self.request_heads.append(head_text)
                cut = ARTIFACT_PATH in head.split(b"\r\n", 1)[0] and self.cuts == 0
                if cut:
                    self.cuts += 1
            # The agent sends GETs without bodies, so the rest is the response.
            threading.Thread(target=self._pump, args=(downstream, upstream), daemon=True).start()
            sent = 0
            while True:
                try:
                    chunk = upstream.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                if cut and sent + len(chunk) >= self.cut_after_bytes:
                    downstream.sendall(chunk[: self.cut_after_bytes - sent])
                    downstream.shutdown(socket.SHUT_RDWR)
                    return
                downstream.sendall(chunk)
                sent += len(chunk)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
