"""System metrics of the device, from ``/proc``, ``/sys`` and ``statvfs`` (stdlib only, no psutil).

CPU is the whole device's busy share since the previous sample (``/proc/stat``),
RSS the agent process's resident memory (``/proc/self/statm``), temperature
the hottest ``/sys/class/thermal/thermal_zone*/temp``, disk the space free to
the agent on its data directory's file system. Whatever a platform lacks is
None.
"""

import logging
import os
from pathlib import Path

from agent.protocol.telemetry import SystemMetrics

log = logging.getLogger(__name__)

PROC_STAT = Path("/proc/stat")
PROC_STATM = Path("/proc/self/statm")
THERMAL = Path("/sys/class/thermal")
PLAUSIBLE_C = (-60.0, 200.0)


def read_cpu_times(path: Path = PROC_STAT) -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs, or None."""
    try:
        with open(path, encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    values = [int(value) for value in fields[1:9] if value.isdigit()]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def read_rss_bytes(path: Path = PROC_STATM) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def read_temperature_c(root: Path = THERMAL) -> float | None:
    """The hottest thermal zone in degrees Celsius (the kernel reports millidegrees)."""
    readings = []
    for zone in root.glob("thermal_zone*/temp"):
        try:
            celsius = int(zone.read_text(encoding="ascii").strip()) / 1000.0
        except (OSError, ValueError):
            continue
        if PLAUSIBLE_C[0] <= celsius <= PLAUSIBLE_C[1]:  # disconnected sensors report nonsense
            readings.append(celsius)
    return max(readings) if readings else None


def read_disk_free_bytes(path: Path) -> int | None:
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


class SystemSampler:
    """Samples system metrics; CPU is measured between consecutive ``sample`` calls."""

    def __init__(self, data_dir: Path, proc_stat: Path = PROC_STAT, thermal: Path = THERMAL) -> None:
        self.data_dir = Path(data_dir)
        self._proc_stat = proc_stat
        self._thermal = thermal
        self._last_cpu = read_cpu_times(proc_stat)

    def sample(self) -> SystemMetrics:
        cpu = read_cpu_times(self._proc_stat)
        cpu_percent = None
        if cpu is not None and self._last_cpu is not None and cpu[1] > self._last_cpu[1]:
            busy = cpu[0] - self._last_cpu[0]
            cpu_percent = min(100.0, max(0.0, 100.0 * busy / (cpu[1] - self._last_cpu[1])))
        self._last_cpu = cpu
        return SystemMetrics(
            cpu_percent=cpu_percent,
            rss_bytes=read_rss_bytes(),
            temperature_c=read_temperature_c(self._thermal),
            disk_free_bytes=read_disk_free_bytes(self.data_dir),
        )
