"""Checkpoints: the whole state at a journal sequence, written atomically, verified on load.

Owns: ``write_checkpoint``, ``load_newest`` (falls back to an older one when the
newest is damaged), ``list_checkpoints``, ``retire_checkpoints``.
Runs on: the checkpoint writer (a forked child or the checkpoint thread) and start-up (load).
Imports: numpy, stdlib, crc32c.

File ``{seq:020d}.ckpt``:
    b"PSTCKPT2" | u64 seq | u32 n | n x (u16 len(name) | name | .npy bytes) | u64 len(meta) | meta | u32 crc32c
The CRC covers everything before it. The arrays come first so that a forked writer can give the
book's memory back before it spends time on the meta (ADR 0023); ``PSTCKPT1`` files, with the
meta first (``u32 len(meta) | meta`` after the seq), are still read. Written as ``.tmp``, fsynced, renamed,
and the directory fsynced: a crash leaves either the old set or the new one.
``meta`` is opaque bytes to this module (the book's id maps, the idempotency
window, ...: see ``daemon.recovery``).
"""
from __future__ import annotations

import ctypes
import errno
import io
import logging
import os
import struct
from collections.abc import Callable

import numpy as np
from crc32c import crc32c

log = logging.getLogger("pstate.checkpoint")
MAGIC = b"PSTCKPT2"
MAGIC_V1 = b"PSTCKPT1"


class CheckpointError(RuntimeError):
    pass


#: a checkpoint goes to disk in chunks of this many bytes as it is written: the journal's group
#: commit shares the disk, and one fsync of a whole checkpoint (100s of MB) at the end would hold
#: every acknowledgement behind it for a second or more (measured in the soak)
SYNC_CHUNK = 4 << 20
#: chunks whose writeback may be in flight at once (sync_file_range); the writer waits for the one
#: before them. More is a faster checkpoint and a longer wait for the journal's fdatasync meanwhile
SYNC_DEPTH = 1
#: arrays are handed to the file in pieces of this many bytes, as views: numpy's write_array
#: copies each 16 MiB into a new bytes object, and on a 10M-position book those copies (fresh
#: memory, faulted in each time) were most of a 7 s checkpoint
WRITE_PIECE = 4 << 20

_SFR_WRITE, _SFR_WAIT = 2, 1 | 2 | 4  # SYNC_FILE_RANGE_WRITE; WAIT_BEFORE | WRITE | WAIT_AFTER


def _sync_file_range():
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None  # not Linux: every chunk is fdatasync'ed instead
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SFR = _sync_file_range()
#: errors that mean "this file or kernel cannot": the writer falls back to fdatasync
_SFR_UNSUPPORTED = frozenset((errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP))


def _sfr(fd: int, off: int, n: int, flags: int) -> bool:
    """sync_file_range; False where it is unsupported (fall back to fdatasync). Any other error
    raises: with the wait flags the kernel reports a writeback error once and clears it, so an
    fdatasync after a failed wait would return 0 and a damaged checkpoint would pass as durable."""
    if _SFR is None:
        return False
    while _SFR(fd, off, n, flags) != 0:
        err = ctypes.get_errno()
        if err == errno.EINTR:
            continue
        if err in _SFR_UNSUPPORTED:
            return False
        raise OSError(err, f"sync_file_range: {os.strerror(err)}")
    return True


class _CrcWriter:
    """Writes through a CRC32C and paces the file's writeback: each SYNC_CHUNK is started with
    sync_file_range as soon as it is written, and the writer waits only for the chunk SYNC_DEPTH
    before it, so the disk always has work and never a backlog of more than a few chunks. This
    is not durability (that is the fsync at the end); it bounds what a journal fdatasync queues
    behind. Where sync_file_range is missing each chunk is fdatasync'ed (slower, as bounded)."""

    def __init__(self, f):
        self.f = f
        self.crc = 0
        self.pos = 0
        self.chunk_start = 0
        self.started: list[tuple[int, int]] = []

    def write(self, b) -> int:
        if len(b) > WRITE_PIECE:  # the meta (ids, the window) can be hundreds of MB: paced as well
            mv = memoryview(b).cast("B")
            return sum(self.write(mv[i:i + WRITE_PIECE]) for i in range(0, len(mv), WRITE_PIECE))
        self.crc = crc32c(b, self.crc)
        n = self.f.write(b)
        self.pos += n
        if self.pos - self.chunk_start >= SYNC_CHUNK:
            self._writeback()
        return n

    def _writeback(self) -> None:
        self.f.flush()
        fd, off, n = self.f.fileno(), self.chunk_start, self.pos - self.chunk_start
        self.chunk_start = self.pos
        if not _sfr(fd, off, n, _SFR_WRITE):
            os.fdatasync(fd)
            return
        self.started.append((off, n))
        if len(self.started) > SYNC_DEPTH:
            off, n = self.started.pop(0)
            if not _sfr(fd, off, n, _SFR_WAIT):
                os.fdatasync(fd)
            try:
                # the chunk is on disk: drop its pages from the cache, so the next chunks reuse them
                # instead of taking fresh memory (on a VM, a first touch costs ~10 us a page: 2.5 GB
                # of new cache was seconds of the checkpoint) and a checkpoint does not evict the journal
                os.posix_fadvise(fd, off, n, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass  # a hint; a file system that refuses it loses nothing

    def write_array(self, arr: np.ndarray, release: Callable[[int, int], None] | None = None) -> None:
        """``np.lib.format.write_array``'s bytes (``read_array`` reads them back), without its copies.
        ``release(address, nbytes)``, when given, is called on each piece once it is in the file
        (cut at addresses that are multiples of WRITE_PIECE, so whole huge pages go together)."""
        arr = np.ascontiguousarray(arr)
        if arr.dtype.hasobject:
            raise CheckpointError("object arrays are not written")
        header = np.lib.format.header_data_from_array_1_0(arr)
        try:
            np.lib.format.write_array_header_1_0(self, header)
        except ValueError:  # a header over 64 KiB
            np.lib.format.write_array_header_2_0(self, header)
        data = arr.reshape(-1).view(np.uint8)
        addr, n = data.ctypes.data, data.nbytes
        lo = 0
        while lo < n:
            hi = min(n, (addr + lo) // WRITE_PIECE * WRITE_PIECE + WRITE_PIECE - addr)
            self.write(data[lo:hi].data)
            if release is not None:
                release(addr + lo, hi - lo)
            lo = hi


def write_checkpoint(directory: str, seq: int, arrays: dict[str, np.ndarray], meta: bytes | Callable[[], bytes],
                     release: Callable[[int, int], None] | None = None) -> str:
    """Write the checkpoint file; returns its path. ``meta`` may be a function, called once the
    arrays are in the file. ``release(address, nbytes)`` is called on each piece of an array once
    it is in the file, except where a later array may share its memory (a forked writer gives
    its pages back as it goes: daemon/ckptfork.py); nothing may read a released array after."""
    os.makedirs(directory, exist_ok=True)
    items = list(arrays.items())
    last_use = [release if release is not None and not any(np.may_share_memory(a, b) for _, b in items[i + 1:])
                else None for i, (_, a) in enumerate(items)]
    final = os.path.join(directory, f"{seq:020d}.ckpt")
    tmp = final + ".tmp"
    try:
        with open(tmp, "wb") as f:
            w = _CrcWriter(f)
            w.write(MAGIC + struct.pack("<QI", seq, len(arrays)))
            for (name, arr), rel in zip(items, last_use):
                nb = name.encode()
                w.write(struct.pack("<H", len(nb)) + nb)
                w.write_array(arr, rel)
            if callable(meta):
                meta = meta()
            w.write(struct.pack("<Q", len(meta)))
            w.write(meta)
            f.write(struct.pack("<I", w.crc))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:  # a failed checkpoint leaves no file the size of the book behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
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
    if len(data) < len(MAGIC) + 16 or data[:8] not in (MAGIC, MAGIC_V1):
        raise CheckpointError(f"{path}: not a checkpoint")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if crc32c(memoryview(data)[:-4]) != crc:
        raise CheckpointError(f"{path}: CRC32C mismatch")
    v1 = data[:8] == MAGIC_V1
    seq, first = struct.unpack_from("<QI", data, 8)
    buf = io.BytesIO(data)
    if v1:  # the meta, then the arrays
        meta = data[20:20 + first]
        buf.seek(20 + first)
        (n,) = struct.unpack("<I", buf.read(4))
    else:
        n = first
        buf.seek(20)
    arrays = {}
    for _ in range(n):
        (ln,) = struct.unpack("<H", buf.read(2))
        name = buf.read(ln).decode()
        arrays[name] = np.lib.format.read_array(buf, allow_pickle=False)
    if not v1:
        (meta_len,) = struct.unpack("<Q", buf.read(8))
        off = buf.tell()
        if off + meta_len != len(data) - 4:
            raise CheckpointError(f"{path}: the meta's length does not reach the CRC")
        meta = data[off:off + meta_len]
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
