"""``large_blocks_released``: inside, glibc serves a 1 MiB block by its own mmap (returned on free, so
whole-utterance scoring cannot fragment the heap); after, from the heap again (a training step's
activations, allocated and freed every step, are not mapped and unmapped each time). Checked in a
fresh interpreter: in the test process other tests' threads map and unmap blocks meanwhile."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import ctypes
import numpy as np
from models.training.runtime import large_blocks_released

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped_while_holding(nbytes):
    before = libc.mallinfo2().hblks
    block = np.empty(nbytes, dtype=np.uint8)
    during = libc.mallinfo2().hblks
    del block
    return during - before

with large_blocks_released():
    inside = mapped_while_holding(1 << 20)
print(inside, mapped_while_holding(1 << 20))
"""


def test_large_blocks_are_mapped_only_inside():
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "0"]
