"""Keep freed memory in a decode worker's heap instead of handing it back to the kernel.

glibc serves large allocations (a decoded recording, a batch's waveform buffer) with fresh mmap
pages and returns the heap's free top to the kernel soon after, so every batch pays a page fault
and a page clear per 4 KiB of waveform. In a worker that decodes batch after batch this was about
a tenth of its CPU: the same allocations come back every batch, so they are kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Allocations below this come from the heap (32 MiB is glibc's ceiling for it): a 10 s clip is
# 640 KB at 16 kHz float32, a batch of them a few MB; hour-long recordings still get their own
# mapping, returned when freed.
MMAP_THRESHOLD = 32 * 2**20
# Free heap kept for the next batches before trimming: a few batches' worth, per worker.
TRIM_THRESHOLD = 256 * 2**20

_applied: bool | None = None  # this process's outcome, once tried


def keep_freed_memory() -> bool:
    """Apply once per process (later calls return the first's outcome); False where the C
    library is not glibc (nothing changes)."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        logger.debug("mallopt refused the decode worker's heap settings")
    return ok
