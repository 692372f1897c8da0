"""Plays systemd's part for one service unit, without systemd as PID 1 (tests only).

It reads the unit file and runs its ``ExecStart`` command line as written, with
the unit's paths mapped into a test directory, and does what systemd does
around it:

* ``Restart=on-failure`` with ``RestartForceExitStatus``/``RestartPreventExitStatus``
  (``RestartSec`` is replaced by a short delay);
* ``NOTIFY_SOCKET``: a datagram socket; every ``READY=1``/``WATCHDOG=1``/``STOPPING=1``
  is recorded; ``WatchdogSec`` becomes ``WATCHDOG_USEC`` (scaled down; no
  ``WATCHDOG_PID``, which only systemd can know before the process exists);
* stopping: SIGTERM to the process group, SIGKILL after a grace period.

``wrap`` turns the command line into the one actually started (e.g. inside a chroot).
"""

import itertools
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fleet_server.processes import wait_until

_numbers = itertools.count(1)

@dataclass
class UnitFile:
    sections: dict[str, dict[str, list[str]]]

    @classmethod
    def read(cls, path: Path) -> "UnitFile":
        sections: dict[str, dict[str, list[str]]] = {}
        current: dict[str, list[str]] | None = None
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], {})
                continue
            assert current is not None, f"{path}: {line!r} outside a section"
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
        return cls(sections)

    def value(self, section: str, key: str, default: str = "") -> str:
        values = self.sections.get(section, {}).get(key, [])
        return values[-1] if values else default

    def statuses(self, key: str) -> set[int]:
        return {int(item) for item in self.value("Service", key).split() if item.isdigit()}


def seconds(value: str) -> float:
    """A systemd time span like ``90s``, ``5min`` or ``2`` in seconds."""
    value = value.strip()
    for suffix, factor in (("min", 60.0), ("ms", 0.001), ("s", 1.0)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


@dataclass
class ServiceSupervisor:
    unit_path: Path
    path_map: Mapping[str, str]
    env: Mapping[str, str]
    log_path: Path
    restart_delay_s: float = 0.3
    watchdog_scale: float = 0.05  # WatchdogSec=90s becomes 4.5 s
    stop_grace_s: float = 20.0
    wrap: Callable[[list[str]], list[str]] | None = None
    service_root: Path | None = None  # the root directory the service runs in (a chroot), else /
    exits: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    notifications: list[tuple[int, str]] = field(default_factory=list)  # (start number, message)

    def __post_init__(self) -> None:
        self.unit = UnitFile.read(self.unit_path)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        notify_dir = Path(tempfile.mkdtemp(prefix="efn-", dir=self.service_root / "run" if self.service_root
                                           else "/tmp"))  # AF_UNIX paths are short: keep it near the root
        notify_dir.chmod(0o755)
        self._socket_path = notify_dir / f"notify-{next(_numbers)}.sock"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self._socket_path))
        self._socket_path.chmod(0o666)  # the service may run as another user
        self._socket.settimeout(0.2)
        self._threads = [threading.Thread(target=self._supervise, daemon=True),
                         threading.Thread(target=self._read_notifications, daemon=True)]

    def command(self) -> list[str]:
        argv = []
        for arg in shlex.split(self.unit.value("Service", "ExecStart")):
            for old, new in self.path_map.items():
                arg = arg.replace(old, new)
            argv.append(arg)
        return self.wrap(argv) if self.wrap else argv

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._threads[0].join(self.stop_grace_s + 5)
        self._socket.close()
        shutil.rmtree(self._socket_path.parent, ignore_errors=True)

    def messages(self, text: str) -> list[int]:
        """The start numbers (1-based) whose process sent ``text`` (e.g. "READY=1")."""
        with self._lock:
            return [start for start, message in self.notifications if text in message.split("\n")]

    def wait_for(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        def check() -> object:
            if self._threads[0].is_alive() or self._stopping.is_set():
                return predicate()
            raise AssertionError(f"the supervisor gave up (exits {self.exits}) while waiting for {what}; "
                                 f"log: {self.log_tail()}")
        wait_until(check, timeout, what, interval=0.2)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- systemd's loops ----------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = dict(self.env)
        seen = "/" + str(self._socket_path.relative_to(self.service_root)) if self.service_root else self._socket_path
        env["NOTIFY_SOCKET"] = str(seen)
        watchdog = self.unit.value("Service", "WatchdogSec")
        if watchdog:
            env["WATCHDOG_USEC"] = str(int(seconds(watchdog) * self.watchdog_scale * 1_000_000))
        return env

    def _supervise(self) -> None:
        force, prevent = self.unit.statuses("RestartForceExitStatus"), self.unit.statuses("RestartPreventExitStatus")
        restart = self.unit.value("Service", "Restart", "no")
        while not self._stopping.is_set():
            with open(self.log_path, "ab") as log, self._lock:
                env = self._environment()
                self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                                 start_new_session=True)
                self.pids.append(self._process.pid)
            code = self._process.wait()
            with self._lock:
                self.exits.append(code)
            if self._stopping.is_set():
                return
            failed = code != 0
            if code in force or (restart == "on-failure" and failed and code not in prevent) or restart == "always":
                time.sleep(self.restart_delay_s)
                continue
            return

    def _read_notifications(self) -> None:
        while not self._stopping.is_set():
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.notifications.append((len(self.pids), data.decode(errors="replace")))
