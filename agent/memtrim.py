"""Give freed heap memory back to the operating system.

glibc's ``malloc`` keeps memory released by ``free`` in its arenas (one per thread that
allocated, up to 8 per core), so after a deployment (download buffers, a health check, the
replaced model's session) the agent's resident size stays at its high-water mark.
``malloc_trim(0)`` returns the free pages of every arena. Other C libraries (musl) return
memory by themselves and lack the call: then this is a no-op.
"""

import ctypes
import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the symbols already loaded: the process's C library
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS; True when the C library did so."""
    trim = _malloc_trim()
    if trim is None:
        return False
    released = bool(trim(0))
    log.debug("event=malloc_trim released=%s", released)
    return released


M_ARENA_MAX = -8  # mallopt parameter number in glibc's malloc.h


def limit_arenas(count: int) -> bool:
    """Let at most ``count`` malloc arenas serve all threads; True when the C library took it.

    glibc gives threads their own arenas (up to 8 per core), each holding its freed memory and a
    partly used top; a mostly idle daemon gains nothing from that. Call before threads start."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, count))
