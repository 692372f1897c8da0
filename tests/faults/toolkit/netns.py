"""What the machine allows for network faults, probed once per test session.

The preferred mechanism is the kernel's own: a network namespace per device, joined to the
host by a veth pair, with ``tc netem`` on the host end for latency and loss and the link set
down for a partition. Each piece needs privileges and kernel support (``sch_netem``) that
containers and CI runners often lack; the probe tries each once, with throw-away names, and
cleans up. ``mechanism`` names what the network scenarios use: the kernel path when every
piece works, else the toolkit's TCP proxy (``proxy.FaultProxy``), with the reason.

``NamespaceLink`` is one device's namespace and veth pair; a scenario uses it for what the
machine allows (``netns``/``veth``: partitions; ``tbf``: rate limits) and the proxy for the rest.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass

from tests.faults.toolkit import FaultToolkitError

PROXY = "tcp-proxy"
KERNEL = "netns+veth+netem"


@dataclass(frozen=True)
class NetworkCapabilities:
    netns: bool
    veth: bool
    netem: bool
    detail: str

    @property
    def namespaces(self) -> bool:
        """Devices can get a network namespace and veth link of their own."""
        return self.netns and self.veth

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
            inside = subprocess.run(["ip", "netns", "exec", namespace, "ip", "link"], capture_output=True, text=True,
                                    timeout=20)
            if inside.returncode != 0:
                return NetworkCapabilities(False, True, False, f"ip netns exec: {inside.stderr.strip()}")
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


def _tc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tc", *args], capture_output=True, text=True, timeout=20)


class NamespaceLink:
    """A device's own network: a namespace joined to the host by a veth pair on a /30 subnet.

    Processes started with ``wrap(argv)`` live in the namespace and reach the host only at
    ``host_ip`` (test relays listen there and forward to the loopback server and broker); the
    host reaches them at ``device_ip``. ``partition()`` sets the host end down: packets vanish
    both ways, no RST, exactly as when a cable or radio link goes. ``limit_rate`` shapes the
    host end with ``tbf``; ``netem`` (delay, loss) where the kernel has it.
    """

    def __init__(self, index: int) -> None:
        if not 0 <= index < 60:
            raise FaultToolkitError("at most 60 namespace links per test process")
        tag = f"ef{os.getpid() % 100000}"
        self.namespace = f"{tag}n{index}"
        self.host_if = f"{tag}h{index}"  # interface names: at most 15 characters
        self.device_if = f"{tag}d{index}"
        subnet = f"10.213.{os.getpid() % 250}"
        self.host_ip = f"{subnet}.{4 * index + 1}"
        self.device_ip = f"{subnet}.{4 * index + 2}"
        self._created = False

    def __repr__(self) -> str:
        return f"NamespaceLink({self.namespace}: {self.host_ip} <-> {self.device_ip})"

    def create(self) -> NamespaceLink:
        steps = [
            ("netns", "add", self.namespace),
            ("link", "add", self.host_if, "type", "veth", "peer", "name", self.device_if),
            ("link", "set", self.device_if, "netns", self.namespace),
            ("addr", "add", f"{self.host_ip}/30", "dev", self.host_if),
            ("link", "set", self.host_if, "up"),
            ("-n", self.namespace, "addr", "add", f"{self.device_ip}/30", "dev", self.device_if),
            ("-n", self.namespace, "link", "set", self.device_if, "up"),
            ("-n", self.namespace, "link", "set", "lo", "up"),
        ]
        self._created = True
        for step in steps:
            result = _ip(*step)
            if result.returncode != 0:
                self.close()
                raise FaultToolkitError(f"ip {' '.join(step)}: {result.stderr.strip()}")
        return self

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def partition(self) -> None:
        self._checked(_ip("link", "set", self.host_if, "down"))

    def heal(self) -> None:
        self._checked(_ip("link", "set", self.host_if, "up"))

    def limit_rate(self, bytes_per_s: int) -> None:
        """Shape what the device receives (the host end's egress) to ``bytes_per_s``."""
        rate = f"{bytes_per_s * 8}bit"
        self._checked(_tc("qdisc", "replace", "dev", self.host_if, "root", "tbf", "rate", rate,
                          "burst", "32kb", "latency", "2s"))

    def netem(self, *args: str) -> None:
        """``tc netem`` on the host end (``delay 100ms``, ``loss 5%``); needs ``sch_netem``."""
        self._checked(_tc("qdisc", "replace", "dev", self.host_if, "root", "netem", *args))

    def clear_shaping(self) -> None:
        _tc("qdisc", "del", "dev", self.host_if, "root")

    def close(self) -> None:
        if self._created:
            _ip("link", "del", self.host_if)
            _ip("netns", "del", self.namespace)
            self._created = False

    @staticmethod
    def _checked(result: subprocess.CompletedProcess[str]) -> None:
        if result.returncode != 0:
            raise FaultToolkitError(f"{' '.join(result.args)}: {result.stderr.strip()}")
