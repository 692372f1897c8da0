"""Hardware facts a device reports at enrollment and verifies variants against.

Runtimes are detected with ``importlib.util.find_spec`` so probing never
imports (and never pays for) onnxruntime or a TFLite interpreter.
"""

import importlib.util
import os
import platform
import re
import socket
from pathlib import Path

from agent.config import AgentConfig
from agent.protocol.metadata import Runtime
from agent.protocol.verify import DeviceFacts
from agent.selfupdate.layout import detect_layout

MEMINFO = Path("/proc/meminfo")
TFLITE_MODULES = ("ai_edge_litert", "tflite_runtime")


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def available_runtimes() -> tuple[str, ...]:
    runtimes = []
    if _module_available("onnxruntime"):
        runtimes.append(Runtime.ONNXRUNTIME.value)
    if any(_module_available(name) for name in TFLITE_MODULES):
        runtimes.append(Runtime.TFLITE.value)
    if detect_layout() is not None:  # installed in A/B slots (install.sh): it can install agent releases
        runtimes.append(Runtime.AGENT.value)
    return tuple(runtimes)


def total_ram_mb(meminfo: Path = MEMINFO) -> int:
    """MemTotal from /proc/meminfo; falls back to sysconf where there is no procfs."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return 0


def machine_arch() -> str:
    return platform.machine().lower() or "unknown"


def sanitized_hostname(hostname: str | None = None) -> str:
    """A valid device id derived from the host name (``Pi-Kitchen.local`` -> ``pi-kitchen-local``)."""
    name = (hostname if hostname is not None else socket.gethostname()).lower()
    name = re.sub(r"[^a-z0-9-]+", "-", name).strip("-")
    name = re.sub(r"-{2,}", "-", name)[:63].strip("-")
    return name or "device"


def device_facts(device_id: str, config: AgentConfig) -> DeviceFacts:
    """This device's facts, with the config's overrides applied."""
    return DeviceFacts(
        device_id=device_id,
        arch=config.arch or machine_arch(),
        ram_mb=config.ram_mb if config.ram_mb is not None else total_ram_mb(),
        runtimes=config.runtimes if config.runtimes is not None else available_runtimes(),
    )
