"""Keep glibc's heap from growing without bound while a model runs on varying graphs.

MD changes a molecule's neighbour count from step to step, so every reference call
allocates tensors of slightly different sizes. glibc's ``malloc`` serves blocks above its
mmap threshold with ``mmap`` and returns them on ``free``, but it raises that threshold
to the largest block freed so far (up to 32 MB). After that, the model's large blocks
come from the heap, and their varying sizes fragment it: measured on a GLN reference run
on this CPU, the memory in use stayed at 0.21 GB while the heap's free space grew by about
0.1 GB a second, one run reaching 23 GB and swapping the machine to a halt, at a time
that differed from run to run (it depends on the process's allocation history).
``malloc_trim`` gave the memory back (2.16 GB to 0.59 GB), so it was fragmentation,
not a leak. A fixed threshold stops the raising: large blocks keep coming from ``mmap``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
import sys

__all__ = ["DEFAULT_MMAP_THRESHOLD", "bound_heap_growth"]

logger = logging.getLogger(__name__)

DEFAULT_MMAP_THRESHOLD = 1 << 20
# mallopt's parameter number for the mmap threshold (glibc's malloc.h)
_M_MMAP_THRESHOLD = -3


def bound_heap_growth(threshold_bytes: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold so that a long run's heap cannot fragment without bound.

    This sets process-wide allocator state, so the library never calls it on import;
    BoostMD's commands call it when they start, and a script that runs long MD on a CPU
    should too (or set ``MALLOC_MMAP_THRESHOLD_=1048576`` in the environment).

    Parameters
    ----------
    threshold_bytes
        Blocks at least this large are allocated with ``mmap`` and returned to the
        system when freed (default 1 MiB).

    Returns
    -------
    bool
        Whether the threshold was set (``False`` where the C library is not glibc).
    """
    if threshold_bytes <= 0:
        raise ValueError(f"threshold_bytes must be positive, got {threshold_bytes}")
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        logger.debug("not glibc: the allocator's mmap threshold is left as it is")
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    done = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)))
    if done:
        logger.info("glibc mmap threshold fixed at %d bytes (bounded heap growth)", threshold_bytes)
    return done
