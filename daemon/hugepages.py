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
import ctypes
import mmap
import time

import numpy as np

HUGE = 2 << 20
_ALIGN = 64  # each array starts on a cache line
_MADV_COLLAPSE = 25  # Linux 6.1+ (not in Python 3.11's mmap module)
COLLAPSE_PIECE = 32 << 20
COLLAPSE_PAUSE_S = 0.001


def _load_madvise():
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise  # a CDLL call releases the GIL
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


libc_madvise = _load_madvise()
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


_MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE


def release_pages(addr: int, nbytes: int) -> bool:
    """Unmap the whole pages of [addr, addr + nbytes) from this process (``MADV_DONTNEED``): what
    was there reads as zeros afterwards, so only memory that is never read again may be given.

    For a forked checkpoint writer (daemon/ckptfork.py): each piece of the book it has written
    to the file. While the child maps a page, the engine's first write to it copies it (and for
    a huge page, splits it first); once the child has let it go, the engine owns it alone again
    and writes it in place (ADR 0023). Also the copy-on-write reserve's release
    (daemon/cowreserve.py). Best effort: False where madvise is missing or refused it (the
    pages are then still there)."""
    lo = -(-addr // _PAGE) * _PAGE
    hi = (addr + nbytes) // _PAGE * _PAGE
    if hi <= lo:
        return True
    return libc_madvise is not None and libc_madvise(lo, hi - lo, _MADV_DONTNEED) == 0


def thp_allowed() -> bool:
    """False when the system's THP setting is ``never`` (read at each call: an operator may change it)."""
    try:
        with open(_THP) as f:
            return "[never]" not in f.read()
    except OSError:
        return True  # no such file: not Linux, or no THP; madvise then fails and says so


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
        self.mm = mm
        self._base, self._size = raw.ctypes.data, len(mm)
        off = -raw.ctypes.data % HUGE
        self.arrays = {}
        for k, (dt, shape) in specs.items():
            self.arrays[k] = raw[off:off + sizes[k]].view(np.dtype(dt)).reshape(shape)
            off += padded[k]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def collapse(self) -> bool:
        """Re-form the mapping's huge pages now (``MADV_COLLAPSE``), off the GIL.

        A checkpoint's fork shares the mapping with the child, and the engine's first write to a
        huge page the child still maps splits it into 4 KiB pages (copy-on-write). khugepaged
        re-forms them only slowly: meanwhile the kernels miss the TLB more (ADR 0013) and every
        later fork copies ~512 page-table entries for each split page (ADR 0022). Called by the
        checkpoint thread once the child has exited. Best effort, and contents never change.
        MADV_COLLAPSE ignores the THP setting, so it is not asked for under ``never`` (the
        operator's choice). False then, and when the kernel reported a failure: before 6.1, and
        also when some 2 MiB of the range hold no page yet (capacity not used), though the rest is
        collapsed then (measured: a 1 GiB array split by copy-on-write re-formed in 168 ms).
        Each 2 MiB collapsed holds the process's mmap lock while it copies, so any fault or
        mmap of the engine meanwhile waits for it: hence the pieces and the pauses."""
        if libc_madvise is None or not thp_allowed():
            return False
        start = -(-self._base // HUGE) * HUGE
        end = (self._base + self._size) // HUGE * HUGE
        ok = end > start
        # in pieces, a pause between (see above)
        for lo in range(start, end, COLLAPSE_PIECE):
            ok &= libc_madvise(lo, min(COLLAPSE_PIECE, end - lo), _MADV_COLLAPSE) == 0
            time.sleep(COLLAPSE_PAUSE_S)
        return ok
