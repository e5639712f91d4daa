"""PostgreSQL binary COPY from NumPy columns, encoded by one Numba loop that releases the GIL.

Owns: ``encode(columns) -> bytes``: rows in PostgreSQL's binary COPY format
(``COPY .. FROM STDIN (FORMAT binary)``) for columns of four kinds: ``int8``
(int64), ``float8`` (float64; NaN is written as NULL), ``text`` (str; None is
NULL) and ``timestamp`` (int64 ns since the Unix epoch, 0 written as NULL; sent as
PostgreSQL's int64 microseconds since 2000-01-01, the ns cut toward zero to whole
microseconds, exactly as ``timestamp '1970-01-01' + (ns / 1000) * interval '1
microsecond'`` does). Nothing per value runs in Python: strings are joined and encoded once,
fixed-width values are copied as 64-bit words, and the byte layout is written by a
``nogil`` kernel, so the write-behind thread encodes while the engine thread runs.
Money, quantities and timestamps travel as int64 (cents, micro-units, ns) and
are converted exactly in SQL (persistence/pgstore.py), never through Decimal
or datetime objects.
Runs on: the write-behind thread. Imports: numpy, numba (kernels.jit).

Format (PostgreSQL docs, "COPY", binary format): an 11-byte signature, int32
flags, int32 header-extension length; per row int16 field count, then per field
int32 length (-1 = NULL) and the value in network byte order; int16 -1 at the end.
"""
from __future__ import annotations

import numpy as np

from portfolio_state.kernels.jit import kernel

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
INT8, FLOAT8, TEXT, TIMESTAMP = 0, 1, 2, 3
#: microseconds from the Unix epoch to PostgreSQL's (2000-01-01), the origin of a binary timestamp
PG_EPOCH_US = 946_684_800_000_000


@kernel(nogil=True)
def _rows_nb(kinds, slot, fixed, null, data, offs, out, at):  # pragma: no cover - compiled
    """Write every row at out[at:], return the end. fixed: [n_fixed, n] uint64 (a float8 column's bits),
    written big-endian; null: [n, ncols]; text column j's row i is data[offs[j, i]: offs[j, i + 1]]."""
    n, ncols = null.shape
    for i in range(n):
        out[at] = np.uint8(ncols >> 8)
        out[at + 1] = np.uint8(ncols & 0xFF)
        at += 2
        for c in range(ncols):
            if null[i, c]:
                out[at] = 0xFF
                out[at + 1] = 0xFF
                out[at + 2] = 0xFF
                out[at + 3] = 0xFF
                at += 4
            elif kinds[c] == 2:
                j = slot[c]
                lo = offs[j, i]
                m = offs[j, i + 1] - lo
                out[at] = np.uint8((m >> 24) & 0xFF)
                out[at + 1] = np.uint8((m >> 16) & 0xFF)
                out[at + 2] = np.uint8((m >> 8) & 0xFF)
                out[at + 3] = np.uint8(m & 0xFF)
                at += 4
                for b in range(m):
                    out[at + b] = data[lo + b]
                at += m
            else:
                out[at] = 0
                out[at + 1] = 0
                out[at + 2] = 0
                out[at + 3] = 8
                at += 4
                v = fixed[slot[c], i]
                for b in range(8):
                    out[at + b] = np.uint8((v >> np.uint64(56 - 8 * b)) & np.uint64(0xFF))
                at += 8
    return at


def _text(values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(utf-8 bytes of all values, n + 1 offsets, null mask) of a column of str / None."""
    vals = values.tolist() if isinstance(values, np.ndarray) else list(values)
    null = np.fromiter((v is None for v in vals), np.bool_, len(vals)) if None in vals else np.zeros(len(vals), np.bool_)
    if null.any():
        vals = ["" if v is None else v for v in vals]
    joined = "".join(vals)
    raw = joined.encode("utf-8")
    lens = np.fromiter(map(len, vals), np.int64, len(vals))
    if len(raw) != len(joined):  # not all ASCII: byte lengths differ from character lengths
        enc = [v.encode("utf-8") for v in vals]
        lens = np.fromiter(map(len, enc), np.int64, len(enc))
        raw = b"".join(enc)
    offs = np.zeros(len(vals) + 1, np.int64)
    np.cumsum(lens, out=offs[1:])
    return np.frombuffer(raw, np.uint8), offs, null


def encode(columns: list[tuple[int, object]], header: bool = True) -> bytes:
    """columns: [(INT8 | FLOAT8 | TEXT | TIMESTAMP, values)], all of one length. The whole COPY stream
    (signature, rows, trailer) when ``header``."""
    n = len(columns[0][1]) if columns else 0
    kinds = np.array([k for k, _ in columns], np.int8)
    slot = np.zeros(len(columns), np.int64)
    fixed_cols, null_cols, texts = [], [], []
    for c, (kind, values) in enumerate(columns):
        if kind == TEXT:
            data, offs, null = _text(values)
            slot[c] = len(texts)
            texts.append((data, offs))
        else:
            if kind == TIMESTAMP:
                ns = np.asarray(values, np.int64)
                null = ns == 0
                arr = np.where(ns >= 0, ns // 1000, -(-ns // 1000)) - PG_EPOCH_US
            else:
                arr = np.asarray(values, np.float64 if kind == FLOAT8 else np.int64)
                null = np.isnan(arr) if kind == FLOAT8 else np.zeros(n, np.bool_)
            slot[c] = len(fixed_cols)
            fixed_cols.append(arr)
        null_cols.append(null)
    fixed = np.empty((max(1, len(fixed_cols)), n), np.uint64)
    for f, col in enumerate(fixed_cols):
        fixed[f] = np.ascontiguousarray(col).view(np.uint64)
    null = np.stack(null_cols, axis=1) if null_cols else np.zeros((n, 0), np.bool_)
    text_bytes = sum(len(d) for d, _ in texts)
    data = np.concatenate([d for d, _ in texts]) if texts else np.zeros(0, np.uint8)
    offs = np.zeros((max(1, len(texts)), n + 1), np.int64)
    base = 0
    for j, (d, o) in enumerate(texts):
        offs[j] = o + base
        base += len(d)
    size = n * (2 + 4 * len(columns) + 8 * len(fixed_cols)) + text_bytes
    head = len(SIGNATURE) if header else 0
    out = np.empty(head + size + (2 if header else 0), np.uint8)
    if header:
        out[:head] = np.frombuffer(SIGNATURE, np.uint8)
    end = _rows_nb(kinds, slot, fixed, null, data, offs, out, head)
    if header:
        out[end:end + 2] = np.frombuffer(TRAILER, np.uint8)
        end += 2
    return out[:end].tobytes()
