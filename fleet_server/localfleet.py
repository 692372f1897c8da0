"""Run a fleet server and device agents as local processes on loopback.

Used by ``edgefleet demo`` and by the integration tests, so both exercise the
real executables exactly as an operator would start them.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_server.errors import FleetServerError

logger = logging.getLogger(__name__)
BIN_DIR = Path(sys.executable).parent


class LocalFleetError(FleetServerError):
    """A local server or agent process failed to start or misbehaved."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise LocalFleetError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_json(url: str, timeout: float = 2.0) -> Any | None:
    """GET ``url`` and decode JSON; None when unreachable or not 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


@dataclass
class ManagedProcess:
    """A child process in its own process group, logging to a file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running:
            raise LocalFleetError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                start_new_session=True,
            )
        finally:
            log.close()
        logger.debug("localfleet event=started name=%s pid=%s", self.name, self.process.pid)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.wait()

    def kill(self) -> None:
        """SIGKILL the whole process group: a power cut, as far as the process can tell."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise LocalFleetError(
                f"{self.name} exited with code {self.process.returncode}; last log lines:\n{self.log_tail()}"
            )


@dataclass
class LocalServer:
    data_dir: Path
    bootstrap_token: str
    admin_token: str
    mqtt_url: str = ""  # empty: the server's embedded broker
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        env = {
            "EDGEFLEET_DATA_DIR": str(self.data_dir),
            "EDGEFLEET_MQTT_URL": self.mqtt_url,
            "EDGEFLEET_BOOTSTRAP_TOKEN": self.bootstrap_token,
            "EDGEFLEET_ADMIN_TOKEN": self.admin_token,
            "EDGEFLEET_PUBLIC_BASE_URL": self.url,
            **self.extra_env,
        }
        argv = [str(BIN_DIR / "edgefleet"), "server", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = ManagedProcess("server", argv, self.data_dir / "server.log", env)
        self.process.start()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            assert self.process is not None
            self.process.check_alive()
            health = http_json(f"{self.url}/api/v1/health")
            return bool(health and health.get("mqtt_connected"))

        wait_until(ready, timeout, f"the fleet server at {self.url}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class LocalAgent:
    device_id: str
    data_dir: Path
    inference_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: ManagedProcess | None = None

    def _argv(self, *args: str) -> list[str]:
        return [str(BIN_DIR / "edgefleet-agent"), "--data-dir", str(self.data_dir), *args]

    def enroll(self, server_url: str, token: str, tags: tuple[str, ...] = ()) -> None:
        argv = self._argv("enroll", "--server", server_url, "--token", token, "--device-id", self.device_id)
        for tag in tags:
            argv += ["--tag", tag]
        result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **self.extra_env},
                                timeout=60)
        if result.returncode != 0:
            raise LocalFleetError(f"enrolling {self.device_id} failed: {result.stderr.strip() or result.stdout}")

    def start(self) -> None:
        argv = self._argv("run", "--inference-port", str(self.inference_port))
        self.process = ManagedProcess(f"agent-{self.device_id}", argv, self.data_dir / "agent.log", self.extra_env)
        self.process.start()

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.inference_port}"

    def wait_serving(self, timeout: float = 30.0) -> None:
        def live() -> bool:
            assert self.process is not None
            self.process.check_alive()
            return http_json(f"{self.inference_url}/v2/health/live") is not None

        wait_until(live, timeout, f"agent {self.device_id} inference endpoint")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def infer(self, model: str, rows: list[list[float]], input_name: str = "input") -> dict[str, Any]:
        """A KServe v2 inference request, exactly as the Open Inference Protocol defines it."""
        body = {
            "inputs": [{
                "name": input_name,
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP32",
                "data": [value for row in rows for value in row],
            }]
        }
        request = urllib.request.Request(
            f"{self.inference_url}/v2/models/{model}/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
