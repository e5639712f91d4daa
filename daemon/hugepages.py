"""Zeroed NumPy arrays packed into one anonymous mapping backed by transparent huge pages.

Owns: ``HugeArena`` (carve the book's arrays out of one 2 MiB-aligned mapping
advised ``MADV_HUGEPAGE``) and ``advise_huge`` (the same advice on any mapping).
Runs on: the engine thread. Imports: numpy, stdlib.

Why: the kernels touch random position records in a ~600 MiB array and random rows
of a dozen ~1 MiB per-portfolio arrays. With 4 KiB pages, each touch can miss the TLB,
and a page walk (a nested one in a VM) costs as much as the miss itself. Separate
``np.zeros`` allocations under 2 MiB can never be huge pages. Packing everything into
one huge-page mapping measured 10-20% off the trade and tick kernels at 10M slots
(perf/RESULTS.md). Where the kernel grants no huge pages (THP ``never``), the arrays are
ordinary zeroed memory and nothing else changes.
"""
import mmap

import numpy as np

HUGE = 2 << 20
_ALIGN = 64  # each array starts on a cache line


def advise_huge(mm: mmap.mmap) -> None:
    """Ask for transparent huge pages on mapping mm (a no-op where the platform refuses)."""
    try:
        mm.madvise(mmap.MADV_HUGEPAGE)
    except (AttributeError, OSError, ValueError):
        pass


class HugeArena:
    """One mapping for a set of arrays: ``HugeArena(specs)[name]`` is a zeroed array.

    specs: {name: (dtype, shape)}. The mapping lives as long as any of its arrays.
    """

    def __init__(self, specs: dict):
        sizes = {k: int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize for k, (dt, shape) in specs.items()}
        padded = {k: -(-n // _ALIGN) * _ALIGN for k, n in sizes.items()}
        mm = mmap.mmap(-1, sum(padded.values()) + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        advise_huge(mm)
        raw = np.frombuffer(mm, np.uint8)  # the arrays keep the mapping alive
        off = -raw.ctypes.data % HUGE
        self.arrays = {}
        for k, (dt, shape) in specs.items():
            self.arrays[k] = raw[off:off + sizes[k]].view(np.dtype(dt)).reshape(shape)
            off += padded[k]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]
