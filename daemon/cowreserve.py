"""Touched memory held in reserve and handed back to the kernel just before a checkpoint's fork.

Owns: ``CowReserve`` (fill: fault a mapping's pages in; release: free them, keeping the mapping)
and ``reserve_bytes`` (the size the settings ask for).
Runs on: the checkpoint thread (every call releases the GIL: ctypes). Imports: numpy, stdlib,
daemon.hugepages.

Why (ADR 0023): after a checkpoint's fork, each page the engine writes while the child still maps
it is copied into a new page. Where a VM backs guest memory lazily (Firecracker here; cloud VMs
with free page reporting or ballooning), a page the guest has not used since boot costs a fault in
the host on its first use. Measured on this host, a copy into such memory took 11.3 µs, and one
into memory freed a moment before took 2.1 µs. At 100,000 updates/s on a 10M-position book, the
first checkpoint's copies held the engine in the kernel for two seconds (p99 0.3-0.8 s), while
the later ones, which found the pages the last child had freed, did not. So the daemon keeps a
reserve of pages it has touched and frees them just before it forks: the copies take those. The
reserve is filled again once the child is gone, from what the child's exit freed. Where memory
is backed eagerly (bare metal) it costs its size in RSS and gains nothing.
"""
from __future__ import annotations

import mmap
import time

import numpy as np

from .hugepages import libc_madvise, release_pages

_MADV_POPULATE_WRITE = 23  # Linux 5.14+
_PAGE = mmap.PAGESIZE
FILL_PIECE = 32 << 20
FILL_PAUSE_S = 0.005


def reserve_bytes(setting_mb: int, book_bytes: int) -> int:
    """The reserve's size: ``setting_mb`` MiB, or with -1 an eighth of the book's arrays."""
    n = book_bytes // 8 if setting_mb < 0 else setting_mb << 20
    return -(-n // _PAGE) * _PAGE


class CowReserve:
    """``nbytes`` of private anonymous memory, in 4 KiB pages (a copy-on-write copy takes one)."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.held = False
        self._mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) if nbytes > 0 else None
        if self._mm is not None:
            try:  # 4 KiB pages even under THP "always": freed, a whole huge page is what the VM reclaims
                # at once, and the advice keeps the mapping from merging with a neighbour's
                self._mm.madvise(mmap.MADV_NOHUGEPAGE)
            except (AttributeError, OSError):
                pass
            view = np.frombuffer(self._mm, np.uint8)
            self._addr = view.ctypes.data
            del view  # no export may outlive close()

    def fill(self) -> bool:
        """Fault every page in (``MADV_POPULATE_WRITE``; touching each page where the kernel lacks it)."""
        if self._mm is None or self.held:
            return self.held
        for lo in range(0, self.nbytes, FILL_PIECE):  # in pieces, a pause between: the engine's
            # core is half of this machine, and a fill is seconds of kernel time where memory is new
            n = min(FILL_PIECE, self.nbytes - lo)
            if libc_madvise is None or libc_madvise(self._addr + lo, n, _MADV_POPULATE_WRITE) != 0:
                np.frombuffer(self._mm, np.uint8)[lo:lo + n:_PAGE] = 1
            time.sleep(FILL_PAUSE_S)
        self.held = True
        return True

    def release(self) -> None:
        """Give the pages back to the kernel (``MADV_DONTNEED``); the mapping stays, empty, for the next fill."""
        if self._mm is None or not self.held:
            return
        if not release_pages(self._addr, self.nbytes):
            self._mm.close()  # no madvise: unmapping frees them as well; nothing is held from now on
            self._mm = None
        self.held = False

    def resident_bytes(self) -> int:
        """How much of the reserve is in memory now (``mincore``-free: counted from /proc)."""
        if self._mm is None:
            return 0
        lo, hi = self._addr, self._addr + self.nbytes
        with open("/proc/self/smaps") as f:
            inside = False
            for line in f:
                head = line.split(" ", 1)[0]
                if "-" in head and ":" not in head:
                    a, b = (int(x, 16) for x in head.split("-"))
                    inside = a <= lo and hi <= b
                elif inside and line.startswith("Rss:"):
                    return int(line.split()[1]) * 1024
        return 0

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        self.held = False
