import platform
import subprocess
import sys

import pytest

from boostmd import bound_heap_growth

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's allocator only",
)

# Frees a 24 MB block (glibc then raises its mmap threshold to 24 MB), then asks for a 4 MB
# block and prints whether it was mmapped (mallinfo2's count of mmapped blocks grew).
_PROBE = """
import ctypes, sys
from boostmd import bound_heap_growth
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "bounded":
    assert bound_heap_growth()
libc.free(libc.malloc(24 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(4 << 20)
print(libc.mallinfo2().hblks > before)
libc.free(block)
"""


@glibc
@pytest.mark.parametrize(("mode", "mmapped"), [("default", "False"), ("bounded", "True")])
def test_a_fixed_threshold_keeps_large_blocks_off_the_heap(mode, mmapped):
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == mmapped


def test_a_threshold_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        bound_heap_growth(0)
