"""A real Mosquitto broker on a free loopback port, for tests.

Persistence is on (in the broker's own directory), so persistent sessions, queued QoS 1
messages and retained messages survive ``stop()`` + ``start()`` on the same port.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fleet_server.processes import LOOPBACK, ManagedProcess, free_port, wait_for_port

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
INSTALL_HINT = "install it with 'apt-get install mosquitto' or run scripts/test.sh as root"


class MosquittoNotFoundError(RuntimeError):
    """No mosquitto executable on this machine."""


def find_mosquitto() -> str:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in MOSQUITTO_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    raise MosquittoNotFoundError(f"mosquitto not found in PATH or /usr/sbin: {INSTALL_HINT}")


class MosquittoBroker:
    """One mosquitto process; ``stop()``/``start()`` restart it on the same port with its state."""

    def __init__(self, directory: Path, port: int | None = None, extra_config: str = "") -> None:
        self.directory = Path(directory)
        self.host = LOOPBACK
        self.port = port or free_port()
        self.extra_config = extra_config
        self.config_path = self.directory / "mosquitto.conf"
        self.persistence_dir = self.directory / "data"
        self.log_path = self.directory / "mosquitto.log"
        self._process = ManagedProcess(
            f"mosquitto:{self.port}", [find_mosquitto(), "-c", self.config_path], self.log_path
        )

    def __repr__(self) -> str:
        return f"MosquittoBroker({self.url}, running={self.running})"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def process(self) -> ManagedProcess:
        return self._process

    def _write_config(self) -> None:
        self.persistence_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            "autosave_interval 1",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise mosquitto drops to 'mosquitto', which cannot write here
        if self.extra_config:
            lines.append(self.extra_config.strip())
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 15.0) -> MosquittoBroker:
        """Start (or restart) the broker on its port and wait until it accepts connections."""
        self._write_config()
        self._process.start()
        wait_for_port(self.port, self.host, timeout, self._process)
        return self

    def stop(self) -> None:
        """Stop cleanly: mosquitto saves its persistence file on SIGTERM."""
        self._process.stop()

    def kill(self) -> None:
        """Kill without a chance to save (state since the last autosave, within 1 s, is lost)."""
        self._process.kill()

    def restart(self) -> MosquittoBroker:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        return self._process.log_tail(lines)
