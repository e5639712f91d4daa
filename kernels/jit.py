"""The one decorator every kernel is compiled with.

Owns: ``kernel`` (jitted entry points and helpers) and ``inline`` (helpers inlined
into their caller). Runs on: import. Imports: numba.

Kernels are compiled without Numba's runtime (NRT): they take arrays the caller
owns and allocate nothing, so there is nothing for NRT to count. With it, every
helper that receives the book tuple increfs and decrefs all of its arrays
(atomic operations behind calls): measured at ~52% of the trade and tick
kernels' time, 4x on throughput (perf/probe_nrt.py; ADR 0006). Should a kernel
ever allocate, it fails to compile instead of leaking.

Numba's on-disk cache is keyed on each function's own source file, so a change to a
helper in another file (fixedpoint.py, valuation.py) would leave stale code inlined
into cached kernels. The cache therefore lives in a directory named after a hash of
every kernel source file: any change to any of them starts a fresh cache.
"""
import hashlib
import os
import pathlib

import numba
from numba import njit

_HERE = pathlib.Path(__file__).resolve().parent
SOURCE_HASH = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(_HERE.glob("*.py")))).hexdigest()[:16]
if not os.environ.get("NUMBA_CACHE_DIR"):
    _base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    numba.config.CACHE_DIR = os.path.join(_base, "portfolio-state", "numba", SOURCE_HASH)


def kernel(fn=None, **options):
    options.setdefault("cache", True)
    options["_nrt"] = False
    return njit(**options) if fn is None else njit(**options)(fn)


def inline(fn):
    return kernel(fn, inline="always")
