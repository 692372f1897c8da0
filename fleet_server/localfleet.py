"""Run a fleet server and device agents as local processes on loopback.

Used by ``edgefleet demo`` and by the integration tests, so both exercise the
real executables exactly as an operator would start them.
"""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_server.errors import FleetServerError
from fleet_server.processes import ManagedProcess, free_port, wait_until

BIN_DIR = Path(sys.executable).parent


def http_json(url: str, timeout: float = 2.0) -> Any | None:
    """GET ``url`` and decode JSON; None when unreachable or not 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


class LocalFleetError(FleetServerError):
    """A local agent could not be enrolled."""


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
        self.process = ManagedProcess("server", argv, self.data_dir / "server.log", {**os.environ, **env})
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
        # "--token=T": a random token may start with "-", which argparse would take for an option
        argv = self._argv("enroll", "--server", server_url, f"--token={token}", "--device-id", self.device_id)
        for tag in tags:
            argv += ["--tag", tag]
        result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **self.extra_env},
                                timeout=60)
        if result.returncode != 0:
            raise LocalFleetError(f"enrolling {self.device_id} failed: {result.stderr.strip() or result.stdout}")

    def start(self) -> None:
        argv = self._argv("run", "--inference-port", str(self.inference_port))
        self.process = ManagedProcess(
            f"agent-{self.device_id}", argv, self.data_dir / "agent.log", {**os.environ, **self.extra_env}
        )
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
