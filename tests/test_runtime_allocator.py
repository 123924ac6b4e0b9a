"""``large_blocks_released``: inside, glibc serves a 1 MiB block by its own mmap (returned on free, so
whole-utterance scoring cannot fragment the heap); after, from the heap again (a training step's
activations, allocated and freed every step, are not mapped and unmapped each time)."""

from __future__ import annotations

import ctypes

import numpy as np

from models.training.runtime import large_blocks_released


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mapped_blocks_while_holding(nbytes: int) -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    before = libc.mallinfo2().hblks
    block = np.empty(nbytes, dtype=np.uint8)
    during = libc.mallinfo2().hblks
    del block
    return during - before


def test_large_blocks_are_mapped_only_inside():
    with large_blocks_released():
        assert _mapped_blocks_while_holding(1 << 20) == 1
    assert _mapped_blocks_while_holding(1 << 20) == 0
