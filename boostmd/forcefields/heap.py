"""Give the C heap's free memory back to the system while a model runs on varying graphs.

MD changes a molecule's neighbour count from step to step, so every reference call
allocates tensors of slightly different sizes, and glibc's ``malloc`` can fragment its
heap under that pattern: measured on GLN dipeptide reference runs on this CPU, the memory
in use stayed at 0.21 GB while the heap's free space grew by about 0.1 GB a second, at a
step that differed from run to run (it depends on the process's allocation history); one
run reached 23 GB and swapped the 24 GB machine to a standstill. ``malloc_trim`` returned
that memory (2.16 GB to 0.59 GB), so it is fragmentation, not a leak.
:class:`~boostmd.forcefields.reference.MACEReference` therefore calls
:func:`release_free_heap` every ``heap_trim_interval`` (64) forward passes, for a cost
measured in ``benchmarks/heap_growth.py``; fixing glibc's mmap threshold at 1 MiB
instead, the other remedy, made every call 19-29% slower.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
import sys

__all__ = ["release_free_heap"]


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_free_heap() -> bool:
    """Return the heap's free pages to the system (glibc's ``malloc_trim(0)``).

    It changes no allocator setting: memory in use stays where it is, and freed memory
    that glibc keeps for reuse is handed back until it is needed again.

    Returns
    -------
    bool
        Whether any memory was released (``False`` where the C library is not glibc).
    """
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))
