"""release_free_memory hands freed heap pages back to the OS and limit_arenas keeps threads in few
malloc arenas (glibc); without the calls both are no-ops."""

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from agent import memtrim


def anon_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not Path("/proc/self/status").exists(),
                                reason="malloc_trim and mallopt are glibc calls; /proc is Linux")


@glibc_only
def test_freed_heap_pages_go_back_to_the_os() -> None:
    memtrim.release_free_memory()
    # ~40 MB of 1 kB objects (beyond pymalloc: from malloc); a few survive, pinning the heap
    # so free() alone cannot shrink it
    blocks = [bytes(1000) + i.to_bytes(4, "little") for i in range(40_000)]
    survivors = blocks[::1000]
    del blocks
    before = anon_kb()
    assert memtrim.release_free_memory() is True
    after = anon_kb()
    assert before - after > 10_000, (before, after)
    assert len(survivors) == 40


def test_without_malloc_trim_it_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memtrim, "_malloc_trim", lambda: None)
    assert memtrim.release_free_memory() is False


ARENAS_AFTER_THREADS = """
import sys, threading
from pathlib import Path
from agent import memtrim
if sys.argv[1] == "limited":
    assert memtrim.limit_arenas(1)
def work():
    keep = [bytes(2000) for _ in range(200)]
    del keep
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
# glibc maps each extra arena as a 64 MB aligned reservation (heap_info), anonymous
arenas = 0
for line in Path("/proc/self/maps").read_text().splitlines():
    fields = line.split()
    start = int(fields[0].split("-")[0], 16)
    if len(fields) == 5 and start % (64 << 20) == 0 and fields[1] == "rw-p":
        arenas += 1
print(arenas)
"""


def count_arenas(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", ARENAS_AFTER_THREADS, mode], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[2])
    return int(result.stdout)


@glibc_only
def test_limited_arenas_keep_threads_in_the_main_arena() -> None:
    assert count_arenas("default") >= 1
    assert count_arenas("limited") == 0
