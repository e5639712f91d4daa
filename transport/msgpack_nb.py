"""MessagePack writing inside Numba: the bytes msgspec writes, for code that builds many messages.

Owns: ``Pool`` (pre-encoded msgpack strings of an append-only id list, grown as the list grows)
and the compiled writers (``put_*_nb``), each taking (buf, w, value) and returning the new write
position. They write what ``msgspec.msgpack.encode`` writes for the same Python values: floats as
float64 (0xcb, their bits kept, NaN's sign included), integers in their smallest form, strings and
arrays with their smallest header, ``None`` as nil; a test holds every event against msgspec.
Runs on: the engine thread. Imports: numpy, numba, msgspec.

Callers size ``buf``: the writers do not check its end.
"""
from __future__ import annotations

import msgspec
import numpy as np
from numba import njit


class Pool:
    """Each string of an append-only list (ids, names), msgpack-encoded once, in one byte array:
    string i is ``data[offs[i]:offs[i + 1]]``, header included. ``sync`` encodes what the list
    gained since the last call; an entry must not change once synced (ids never do)."""

    def __init__(self, names: list[str]):
        self.names = names
        self.data = np.zeros(1024, np.uint8)
        self.offs = np.zeros(1024, np.int64)  # offs[: n + 1] in use; both arrays double when full
        self.n = 0

    def sync(self) -> None:
        names, n = self.names, self.n
        if len(names) == n:
            return
        enc = msgspec.msgpack.encode
        new = [enc(s) for s in names[n:]]
        ends = self.offs[n] + np.cumsum([len(b) for b in new], dtype=np.int64)
        end = int(ends[-1])
        self.data = _room(self.data, end)
        self.offs = _room(self.offs, len(names) + 1)
        self.data[int(self.offs[n]):end] = np.frombuffer(b"".join(new), np.uint8)
        self.offs[n + 1:len(names) + 1] = ends
        self.n = len(names)


def _room(a: np.ndarray, size: int) -> np.ndarray:
    """``a``, or a longer copy (room for half as much again, at least double) when it is shorter than ``size``."""
    if size <= len(a):
        return a
    out = np.zeros(max(size + size // 2, 2 * len(a)), a.dtype)
    out[: len(a)] = a
    return out


def literals(*values) -> tuple[np.ndarray, np.ndarray]:
    """Constant msgpack items (map keys, enum names) in one array: item i is data[offs[i]:offs[i + 1]]."""
    parts = [msgspec.msgpack.encode(v) for v in values]
    offs = np.zeros(len(parts) + 1, np.int64)
    offs[1:] = np.cumsum([len(b) for b in parts])
    return np.frombuffer(b"".join(parts), np.uint8).copy(), offs


@njit(cache=True, inline="always")
def put_item_nb(buf, w, data, offs, i):
    """Copy pre-encoded item i of (data, offs)."""
    for j in range(offs[i], offs[i + 1]):
        buf[w] = data[j]
        w += 1
    return w


@njit(cache=True, inline="always")
def _be_nb(buf, w, x, nbytes):
    for j in range(nbytes - 1, -1, -1):
        buf[w + j] = np.uint8(x & 0xFF)
        x >>= 8
    return w + nbytes


@njit(cache=True)
def put_int_nb(buf, w, x):
    x = np.int64(x)
    if x >= 0:
        if x < 128:
            buf[w] = np.uint8(x)
            return w + 1
        if x < 256:
            buf[w] = 0xCC
            return _be_nb(buf, w + 1, x, 1)
        if x < 65536:
            buf[w] = 0xCD
            return _be_nb(buf, w + 1, x, 2)
        if x < 4294967296:
            buf[w] = 0xCE
            return _be_nb(buf, w + 1, x, 4)
        buf[w] = 0xCF
        return _be_nb(buf, w + 1, x, 8)
    if x >= -32:
        buf[w] = np.uint8(x & 0xFF)
        return w + 1
    if x >= -128:
        buf[w] = 0xD0
        return _be_nb(buf, w + 1, x, 1)
    if x >= -32768:
        buf[w] = 0xD1
        return _be_nb(buf, w + 1, x, 2)
    if x >= -2147483648:
        buf[w] = 0xD2
        return _be_nb(buf, w + 1, x, 4)
    buf[w] = 0xD3
    return _be_nb(buf, w + 1, x, 8)


@njit(cache=True, inline="always")
def put_float_nb(buf, w, x, fbits, ibits):
    """float64, big-endian; ``fbits`` / ``ibits``: one 8-byte scratch cell the caller owns, seen
    as float64 and as int64 (its bits)."""
    fbits[0] = x
    buf[w] = 0xCB
    return _be_nb(buf, w + 1, ibits[0], 8)


@njit(cache=True)
def put_str_header_nb(buf, w, n):
    if n < 32:
        buf[w] = np.uint8(0xA0 | n)
        return w + 1
    if n < 256:
        buf[w] = 0xD9
        return _be_nb(buf, w + 1, n, 1)
    if n < 65536:
        buf[w] = 0xDA
        return _be_nb(buf, w + 1, n, 2)
    buf[w] = 0xDB
    return _be_nb(buf, w + 1, n, 4)


@njit(cache=True)
def put_array_header_nb(buf, w, n):
    if n < 16:
        buf[w] = np.uint8(0x90 | n)
        return w + 1
    if n < 65536:
        buf[w] = 0xDC
        return _be_nb(buf, w + 1, n, 2)
    buf[w] = 0xDD
    return _be_nb(buf, w + 1, n, 4)


@njit(cache=True, inline="always")
def put_nil_nb(buf, w):
    buf[w] = 0xC0
    return w + 1


@njit(cache=True)
def decimal_digits_nb(out, o, x):
    """Write the decimal digits of ``x`` >= 0 at out[o:]; return the position after them."""
    n = 1
    y = x
    while y >= 10:
        y //= 10
        n += 1
    for j in range(n - 1, -1, -1):
        out[o + j] = np.uint8(48 + x % 10)
        x //= 10
    return o + n


@njit(cache=True)
def put_iso_nb(buf, w, ns, digits):
    """The string numpy's ``datetime_as_string(datetime64(ns, 'ns'), unit)`` + 'Z' gives, with unit
    'ms' (digits 3) or 'us' (digits 6): the instant floored to the unit, years 1678-2261 (all
    int64 nanoseconds)."""
    secs = ns // 1_000_000_000
    frac = ns - secs * 1_000_000_000
    days = secs // 86400
    sod = secs - days * 86400
    # civil from days (H. Hinnant): proleptic Gregorian year, month, day of days since 1970-01-01
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    mo = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if mo <= 2 else 0)
    n = 20 + 1 + digits  # YYYY-MM-DDTHH:MM:SS . fraction Z
    buf[w] = np.uint8(0xA0 | n)
    w += 1
    w = _digits_nb(buf, w, y, 4)
    buf[w] = 45
    w = _digits_nb(buf, w + 1, mo, 2)
    buf[w] = 45
    w = _digits_nb(buf, w + 1, d, 2)
    buf[w] = 84  # T
    w = _digits_nb(buf, w + 1, sod // 3600, 2)
    buf[w] = 58
    w = _digits_nb(buf, w + 1, (sod // 60) % 60, 2)
    buf[w] = 58
    w = _digits_nb(buf, w + 1, sod % 60, 2)
    buf[w] = 46
    w = _digits_nb(buf, w + 1, frac // 10 ** (9 - digits), digits)
    buf[w] = 90  # Z
    return w + 1


@njit(cache=True, inline="always")
def _digits_nb(buf, w, x, n):
    """x >= 0 as exactly n decimal digits, zero-padded."""
    for j in range(n - 1, -1, -1):
        buf[w + j] = np.uint8(48 + x % 10)
        x //= 10
    return w + n
