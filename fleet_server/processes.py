"""Local processes on loopback: free ports, waiting, and managed subprocesses.

Used by ``edgefleet demo`` (through ``fleet_server.localfleet``) and by the tests. Only the
standard library: the agent tests also import it in the legacy TFLite environment, which has no
server packages.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, ClassVar, TypeVar

from fleet_server.errors import FleetServerError

log = logging.getLogger(__name__)

T = TypeVar("T")
LOOPBACK = "127.0.0.1"

_ports_handed_out: set[int] = set()
_ports_lock = threading.Lock()


class ProcessFailedError(FleetServerError):
    """A managed process exited while it was still needed."""


class WaitTimeoutError(FleetServerError, TimeoutError):
    """A condition did not come true in time."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (and that this process has not handed out before)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        with _ports_lock:
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise ProcessFailedError("could not find a free TCP port")


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """Whether a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Raises ``TimeoutError`` naming ``what`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 15.0,
                  process: ManagedProcess | None = None) -> None:
    """Wait until host:port accepts connections; fail early if ``process`` dies meanwhile."""

    def ready() -> bool:
        if process is not None:
            process.check_alive()
        return port_accepts(port, host)

    try:
        wait_until(ready, timeout, f"{host}:{port} to accept connections")
    except TimeoutError as exc:
        tail = f"\n{process.name} log tail:\n{process.log_tail()}" if process is not None else ""
        raise WaitTimeoutError(f"{exc}{tail}") from None


class ManagedProcess:
    """A subprocess for a test: own process group, output to a log file, killed at teardown.

    Every running instance is listed in ``ManagedProcess.live``; the test suite's conftest adds
    the tail of each one's log to the report of a failing test.
    """

    live: ClassVar[list[ManagedProcess]] = []

    def __init__(self, name: str, argv: Sequence[str | os.PathLike[str]], log_path: Path,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = [os.fspath(arg) for arg in argv]
        self.log_path = Path(log_path)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._output_offset = 0  # where the output of the latest start begins in the log

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, running={self.running})"

    def __enter__(self) -> ManagedProcess:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def start(self) -> ManagedProcess:
        if self.running:
            raise ProcessFailedError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f"---- starting {self.name}: {' '.join(self.argv)}\n".encode())
        self._log_file.flush()
        self._output_offset = self._log_file.tell()
        self._popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env=self.env, cwd=self.cwd, start_new_session=True,
        )
        if self not in ManagedProcess.live:
            ManagedProcess.live.append(self)
        log.debug("started %s (pid %d)", self.name, self._popen.pid)
        return self

    def check_alive(self) -> None:
        """Raise ``ProcessFailedError`` (with the log tail) if the process has exited."""
        if self._popen is None:
            raise ProcessFailedError(f"{self.name} was never started")
        code = self._popen.poll()
        if code is not None:
            raise ProcessFailedError(f"{self.name} exited with code {code}; log tail:\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group."""
        if self.running and self._popen is not None:
            try:
                os.killpg(self._popen.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; return the exit code."""
        return self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL the process group at once (a crash or power cut, as far as it can tell)."""
        return self._terminate(signal.SIGKILL, 10.0)

    def _terminate(self, signum: int, timeout: float) -> int | None:
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            self.signal(signum)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored signal %d for %.0fs; killing it", self.name, signum, timeout)
                self.signal(signal.SIGKILL)
                popen.wait(10)
        # Children that outlived the leader in the same group go too.
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self in ManagedProcess.live:
            ManagedProcess.live.remove(self)
        return popen.returncode

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; return its exit code."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen.wait(timeout)

    def log_text(self, latest_run_only: bool = False) -> str:
        """The log (of every run, or of the latest start only)."""
        try:
            with self.log_path.open("rb") as handle:
                if latest_run_only:
                    handle.seek(self._output_offset)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        """Wait until the latest run prints ``text`` (fail early if the process exits)."""

        def seen() -> bool:
            if text in self.log_text(latest_run_only=True):
                return True
            self.check_alive()
            return False

        wait_until(seen, timeout, f"{text!r} in the log of {self.name}")
