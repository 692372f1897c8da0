"""What the machine allows for network faults, probed once per test session.

The preferred mechanism is the kernel's own: a network namespace per device, joined to the
host by a veth pair, with ``tc netem`` on the host end for latency and loss and the link set
down for a partition. Each piece needs privileges and kernel support (``sch_netem``) that
containers and CI runners often lack; the probe tries each once, with throw-away names, and
cleans up. ``mechanism`` names what the network scenarios use: the kernel path when every
piece works, else the toolkit's TCP proxy (``proxy.FaultProxy``), with the reason.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass

PROXY = "tcp-proxy"
KERNEL = "netns+veth+netem"


@dataclass(frozen=True)
class NetworkCapabilities:
    netns: bool
    veth: bool
    netem: bool
    detail: str

    @property
    def kernel_faults(self) -> bool:
        return self.netns and self.veth and self.netem

    @property
    def mechanism(self) -> str:
        return KERNEL if self.kernel_faults else PROXY

    def describe(self) -> str:
        return self.mechanism if self.kernel_faults else f"{PROXY} ({self.detail})"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


@functools.cache
def probe() -> NetworkCapabilities:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        return NetworkCapabilities(False, False, False, "needs root and the ip/tc commands")
    tag = f"ef{os.getpid() % 100000}"
    namespace, host_end, device_end = f"{tag}-probe", f"{tag}h", f"{tag}d"
    added = _ip("netns", "add", namespace)
    if added.returncode != 0:
        return NetworkCapabilities(False, False, False, f"ip netns add: {added.stderr.strip()}")
    try:
        veth = _ip("link", "add", host_end, "type", "veth", "peer", "name", device_end)
        if veth.returncode != 0:
            return NetworkCapabilities(True, False, False, f"veth: {veth.stderr.strip()}")
        try:
            moved = _ip("link", "set", device_end, "netns", namespace)
            if moved.returncode != 0:
                return NetworkCapabilities(True, False, False, f"veth into netns: {moved.stderr.strip()}")
            netem = subprocess.run(["tc", "qdisc", "add", "dev", host_end, "root", "netem", "delay", "1ms"],
                                   capture_output=True, text=True, timeout=20)
            if netem.returncode != 0:
                return NetworkCapabilities(True, True, False, f"tc netem unavailable: {netem.stderr.strip()}")
            return NetworkCapabilities(True, True, True, "network namespaces, veth and tc netem work")
        finally:
            _ip("link", "del", host_end)
    finally:
        _ip("netns", "del", namespace)
