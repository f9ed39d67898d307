"""Keep freed memory for reuse in the loader's worker processes (glibc's malloc settings).

A worker decodes windows (three ``[T, N, p, p]`` float32 arrays of 3.4 MB each on the GB
grid), prepares them and frees them a few batches later. With glibc's default settings
blocks of this size are returned to the kernel when freed (``munmap``, or a trim of the
heap's top), so the next window's arrays are fresh pages and each 4 KiB page faults when
first written (``docs/benchmarks.md`` has the faults and CPU time a batch, with and
without this setting). :func:`keep_freed_memory` makes blocks below 32 MiB come from the
heap and stops the heap's trimming, so freed blocks are reused. A worker's resident memory
then stays at its peak, which the shuffle buffer and the prefetched batches bound anyway.
"""

from __future__ import annotations

import ctypes
import logging
import platform

logger = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # bytes; glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 2**31 - 1  # bytes: never trim (an int is all mallopt takes)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc, in this process, to keep freed blocks below 32 MiB for reuse.

    Returns whether it was applied: False (and nothing changes) where the C library is
    not glibc (macOS, musl) or refuses the settings.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    done = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    done = done and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not done:
        logger.debug("mallopt refused the settings; freed memory goes back to the kernel")
    return done


__all__ = ["keep_freed_memory"]
