"""Checkpoints: the whole state at a journal sequence, written atomically, verified on load.

Owns: ``write_checkpoint``, ``load_newest`` (falls back to an older one when the
newest is damaged), ``list_checkpoints``, ``retire_checkpoints``.
Runs on: the checkpoint thread (write) and start-up (load). Imports: numpy, stdlib, crc32c.

File ``{seq:020d}.ckpt``:
    b"PSTCKPT1" | u64 seq | u32 len(meta) | meta | u32 n | n x (u16 len(name) | name | .npy bytes) | u32 crc32c
The CRC covers everything before it. Written as ``.tmp``, fsynced, renamed,
and the directory fsynced: a crash leaves either the old set or the new one.
``meta`` is opaque bytes to this module (the book's id maps, the idempotency
window, ...: see ``daemon.recovery``).
"""
from __future__ import annotations

import io
import logging
import os
import struct

import numpy as np
from crc32c import crc32c

log = logging.getLogger("pstate.checkpoint")
MAGIC = b"PSTCKPT1"


class CheckpointError(RuntimeError):
    pass


#: a checkpoint is flushed to disk every this many bytes as it is written: the journal's group
#: commit shares the disk, and one fsync of a whole checkpoint (100s of MB) at the end would
#: hold every acknowledgement behind it for a second or more (measured in the soak)
SYNC_CHUNK = 8 << 20


class _CrcWriter:
    def __init__(self, f):
        self.f = f
        self.crc = 0
        self.unsynced = 0

    def write(self, b) -> int:
        self.crc = crc32c(b, self.crc)
        n = self.f.write(b)
        self.unsynced += len(b)
        if self.unsynced >= SYNC_CHUNK:
            self.f.flush()
            os.fdatasync(self.f.fileno())
            self.unsynced = 0
        return n


def write_checkpoint(directory: str, seq: int, arrays: dict[str, np.ndarray], meta: bytes) -> str:
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, f"{seq:020d}.ckpt")
    tmp = final + ".tmp"
    with open(tmp, "wb") as f:
        w = _CrcWriter(f)
        w.write(MAGIC + struct.pack("<QI", seq, len(meta)))
        w.write(meta)
        w.write(struct.pack("<I", len(arrays)))
        for name, arr in arrays.items():
            nb = name.encode()
            w.write(struct.pack("<H", len(nb)) + nb)
            np.lib.format.write_array(w, np.ascontiguousarray(arr), allow_pickle=False)
        f.write(struct.pack("<I", w.crc))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    if not os.path.isdir(directory):
        return []
    return sorted((int(n[:-5]), os.path.join(directory, n)) for n in os.listdir(directory)
                  if n.endswith(".ckpt") and n[:-5].isdigit())


def load_checkpoint(path: str) -> tuple[int, dict[str, np.ndarray], bytes]:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < len(MAGIC) + 16 or data[:8] != MAGIC:
        raise CheckpointError(f"{path}: not a checkpoint")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if crc32c(memoryview(data)[:-4]) != crc:
        raise CheckpointError(f"{path}: CRC32C mismatch")
    seq, meta_len = struct.unpack_from("<QI", data, 8)
    off = 20
    meta = data[off:off + meta_len]
    off += meta_len
    (n,) = struct.unpack_from("<I", data, off)
    buf = io.BytesIO(data)
    buf.seek(off + 4)
    arrays = {}
    for _ in range(n):
        (ln,) = struct.unpack("<H", buf.read(2))
        name = buf.read(ln).decode()
        arrays[name] = np.lib.format.read_array(buf, allow_pickle=False)
    return seq, arrays, meta


def load_newest(directory: str):
    """(seq, arrays, meta) of the newest checkpoint that verifies, or None. Damaged ones are skipped
    with a warning (and kept on disk for inspection)."""
    for seq, path in reversed(list_checkpoints(directory)):
        try:
            return load_checkpoint(path)
        except (CheckpointError, ValueError, struct.error, OSError) as e:
            log.warning("checkpoint %s is unusable (%s); falling back to the previous one", path, e)
    return None


def retire_checkpoints(directory: str, keep: int, floor: int | None = None) -> list[int]:
    """Delete all but the newest ``keep`` checkpoints, and the newest one at or before ``floor``
    (a consumer's watermark) when given; return the sequences still kept."""
    cps = list_checkpoints(directory)
    kept = cps[-keep:] if keep > 0 else list(cps)
    if floor is not None:
        below = [c for c in cps if c[0] <= floor]
        if below and below[-1] not in kept:
            kept = [below[-1]] + kept
    for c in cps:
        if c not in kept:
            os.unlink(c[1])
    return [s for s, _ in kept]
