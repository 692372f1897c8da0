"""A Debian bookworm root file system for the install tests: made with debootstrap once, cached as
a tarball, unpacked per test module; commands run inside it with chroot in a private mount
namespace (so the /proc mounted for them disappears with them). The network namespace is the
host's, so a server on 127.0.0.1 is reachable from inside."""

import os
import platform
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.firmware_images.builds import CACHE

MIRROR = os.environ.get("EDGEFLEET_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("python3", "python3-venv", "systemd", "ca-certificates")  # what a Raspberry Pi OS Lite image has
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def debian_arch() -> str:
    return DEBIAN_ARCH.get(platform.machine(), platform.machine())


def cached_rootfs(arch: str) -> Path:
    """The tarball of a debootstrapped bookworm (made on first use: about a minute and 60 MB of packages)."""
    tarball = CACHE / "debootstrap" / f"bookworm-{arch}-{'-'.join(PACKAGES)}.tar"
    if tarball.is_file():
        return tarball
    assert shutil.which("debootstrap"), "debootstrap is missing (scripts/lib.sh installs it)"
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = tarball.with_name(f"{tarball.stem}.work-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        # In a mount namespace of its own: the /proc and /sys debootstrap mounts in the target vanish with it,
        # even when it is killed half-way (a leftover mount would make removing the work directory unsafe).
        subprocess.run(["unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase",
                        f"--arch={arch}", f"--include={','.join(PACKAGES)}", "bookworm", str(work), MIRROR],
                       check=True, capture_output=True, timeout=1200)
        partial = tarball.with_name(f"{tarball.name}.partial-{os.getpid()}")
        subprocess.run(["tar", "--numeric-owner", "-cpf", str(partial), "-C", str(work), "."], check=True,
                       timeout=600)
        partial.rename(tarball)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"debootstrap failed: {exc.stderr.decode(errors='replace')[-2000:]}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def unpack(tarball: Path, root: Path) -> Path:
    root.mkdir(parents=True)
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(tarball), "-C", str(root)], check=True, timeout=600)
    return root


def inside(root: Path, argv: list[str], user: str | None = None) -> list[str]:
    """The command line that runs ``argv`` in ``root`` (as ``user`` "uid:gid"), with /proc mounted."""
    chroot = ["chroot", *([f"--userspec={user}"] if user else []), str(root), *argv]
    script = f"mount -t proc proc {shlex.quote(str(root / 'proc'))} && exec {shlex.join(chroot)}"
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def account(root: Path, name: str) -> tuple[int, int]:
    """uid and gid of ``name`` in the root's /etc/passwd."""
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise AssertionError(f"no user {name} in {root}/etc/passwd")
