"""The int8 architecture policy: U8S8 variants measured where saturation cannot show are kept off x86."""

from pathlib import Path

from compression.host import ARM_ARCHES, HostInfo, detect_host, u8s8_arch


def test_detect_host_reads_cpu_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Example CPU\nflags\t\t: fpu sse avx2 avx512_vnni\n")
    host = detect_host(cpuinfo)
    assert host.vnni and host.cpu
    cpuinfo.write_text("flags\t\t: fpu sse avx2\n")
    assert not detect_host(cpuinfo).vnni


def test_u8s8_policy() -> None:
    assert u8s8_arch(HostInfo("x86_64", "old", vnni=False))[0] == ()
    assert u8s8_arch(HostInfo("x86_64", "new", vnni=True))[0] == ARM_ARCHES
    arch, note = u8s8_arch(HostInfo("aarch64", "pi", vnni=False))
    assert arch == ARM_ARCHES and "VNNI" in note
