import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's allocator only",
)

# Fills 128 MB of the heap with 64 KB blocks (below glibc's mmap threshold), frees all but
# the last (which pins the heap's top, so free() cannot shrink it), then prints the
# resident set before and after release_free_heap().
_PROBE = """
import ctypes
from boostmd.forcefields.heap import release_free_heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
blocks = [libc.malloc(64 << 10) for _ in range(2048)]
for block in blocks:
    ctypes.memset(block, 1, 64 << 10)
for block in blocks[:-1]:
    libc.free(block)
before = resident()
released = release_free_heap()
print(released, before - resident())
"""


@glibc
def test_release_free_heap_returns_freed_heap_memory_to_the_system():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    released, returned = out.stdout.split()
    assert released == "True"
    assert int(returned) > 100 << 20  # of the 128 MB freed


def test_the_reference_releases_the_heap_every_interval_calls(reference, monkeypatch):
    from ase.build import molecule

    import boostmd.forcefields.reference as module

    calls = []
    monkeypatch.setattr(module, "release_free_heap", lambda: calls.append(1) or True)
    monkeypatch.setattr(reference, "heap_trim_interval", 3)
    atoms = molecule("CH3CH2OH")
    for _ in range(7):
        reference(atoms)
    assert len(calls) == 2
    monkeypatch.setattr(reference, "heap_trim_interval", 0)
    for _ in range(6):
        reference(atoms)
    assert len(calls) == 2
