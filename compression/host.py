"""The CPU the evaluation runs on, and what that means for int8 variants.

onnxruntime's U8S8 int8 kernels on x86-64 without VNNI use ``VPMADDUBSW``,
whose int16 intermediate sums can saturate; ARM (and x86 with VNNI) do not.
The accuracy gate measures on this host, so:

- evaluated on x86-64 *without* VNNI: the measurement includes any saturation
  and is pessimistic for ARM, so the variant suits every architecture;
- evaluated anywhere else: nothing vouches for x86 devices without VNNI
  (devices report only their architecture name), so the int8 onnxruntime
  variants are restricted to ARM devices; x86 devices take the next variant.
"""

import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
X86_ARCHES = ("x86_64", "amd64", "i386", "i686")
ARM_ARCHES = ("aarch64", "arm64", "armv7l", "armv8l", "armv6l")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "avx_vnni_int8")


@dataclass(frozen=True)
class HostInfo:
    arch: str
    cpu: str
    vnni: bool

    @property
    def is_x86(self) -> bool:
        return self.arch in X86_ARCHES

    def to_dict(self) -> dict[str, object]:
        return {"arch": self.arch, "cpu": self.cpu, "vnni": self.vnni}


def detect_host(cpuinfo: Path = CPUINFO) -> HostInfo:
    arch = platform.machine().lower() or "unknown"
    cpu, flags = platform.processor() or arch, set()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware") and cpu in ("", arch):
                cpu = value.strip()
            elif key in ("flags", "features"):
                flags.update(value.split())
    except OSError:
        pass
    return HostInfo(arch, cpu, any(flag in flags for flag in VNNI_FLAGS))


def u8s8_arch(host: HostInfo) -> tuple[tuple[str, ...], str]:
    """Compatibility ``arch`` for an onnxruntime U8S8 int8 variant evaluated on ``host``, and why."""
    if host.is_x86 and not host.vnni:
        return (), "evaluated on x86-64 without VNNI (U8S8 saturation included in the measurement): any arch"
    return ARM_ARCHES, (f"evaluated on {host.arch}{' with VNNI' if host.vnni else ''}: restricted to ARM, "
                        "x86 devices without VNNI may saturate U8S8")
