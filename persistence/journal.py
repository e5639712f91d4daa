"""The journal: append-only segment files of length-prefixed, sequenced, CRC32C-checked records.

Owns: ``JournalWriter`` (append, group-commit sync, segment roll, retirement),
``read_records`` (verify and iterate; a torn tail is truncated, any other
damage stops with the file and offset), record kinds and ``JournalError``.
Runs on: the engine thread (append, ``begin_sync`` / ``end_sync`` around an outside
fdatasync), a sync thread (``sync``: fdatasync only) and, with ``preallocate``, a thread
that zero-fills the next segment. Imports: stdlib, crc32c.

Record (little-endian):
    u32 length | u64 seq | i64 recv_ns | u8 kind | u32 payload_crc | u32 header_crc | payload
payload_crc is CRC32C of the payload; header_crc is CRC32C of the 25 header bytes
before it. With both, a torn final write (only trailing garbage) is told apart
from damage earlier in the file: damage is followed by a valid record, a torn
tail never is.
Segment ``{first_seq:020d}.seg`` holds consecutive records; a new segment starts
once ``segment_bytes`` is reached. Sequences start at 1 and never repeat.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from crc32c import crc32c

log = logging.getLogger("pstate.journal")

HEADER = struct.Struct("<IQqBII")
HEADER_SIZE = HEADER.size  # 29 bytes
_HEAD = struct.Struct("<IQqBI")
_ZERO_HEADER = bytes(HEADER_SIZE)

#: record kinds
COMMAND = 0      # a client command body (msgpack or JSON), as received
FEED_PRICES = 1  # msgpack [[instrument_id, price], ...] from a market-data feed, conflated
FEED_FX = 2      # msgpack [[currency, rate], ...]
RUN = 3          # msgpack [allocs, columns, pre-reasons, commands]: one run of position updates as kernel inputs

MAX_RECORD = 1 << 30
SPARE = "next-segment.zero"  # a zero-filled file waiting to become the next segment (preallocate)
FILL_CHUNK = 256 << 10        # the background fill writes and syncs this much at a time,
FILL_PAUSE_S = 0.001          # then pauses: ~100 MB/s here, and no sync waits long behind it


class JournalError(RuntimeError):
    """The journal cannot be trusted or written; ``code`` says why (DISK_FULL, JOURNAL_IO, CORRUPT)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class Record:
    seq: int
    recv_ns: int
    kind: int
    payload: bytes


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.seg"


def list_segments(directory: str) -> list[tuple[int, str]]:
    out = []
    for name in os.listdir(directory):
        if name.endswith(".seg") and name[:-4].isdigit():
            out.append((int(name[:-4]), os.path.join(directory, name)))
    return sorted(out)


def encode_record(seq: int, recv_ns: int, kind: int, payload: bytes) -> bytes:
    head = _HEAD.pack(len(payload), seq, recv_ns, kind, crc32c(payload))
    return head + struct.pack("<I", crc32c(head)) + payload


def _parse(data, off: int):
    """(length, seq, recv_ns, kind, payload) of a record whose header and payload both verify at off, else None."""
    if len(data) - off < HEADER_SIZE:
        return None
    length, seq, recv_ns, kind, pcrc, hcrc = HEADER.unpack_from(data, off)
    if crc32c(bytes(data[off:off + HEADER_SIZE - 4])) != hcrc or length > MAX_RECORD:
        return None
    end = off + HEADER_SIZE + length
    if end > len(data):
        return None
    payload = bytes(data[off + HEADER_SIZE:end])
    if crc32c(payload) != pcrc:
        return None
    return length, seq, recv_ns, kind, payload


def _valid_record_after(data, off: int, used: int) -> int:
    """Offset of the first verifiable record after off that starts before ``used`` (where the
    trailing zeros begin), or -1 (a torn tail has none)."""
    for k in range(off + 1, min(used, len(data) - HEADER_SIZE + 1)):
        if _parse(data, k) is not None:
            return k
    return -1


def read_records(directory: str, after_seq: int = 0, repair: bool = True,
                 ends: dict[str, int] | None = None) -> Iterator[Record]:
    """Every record with seq > after_seq, in order, verified.

    A segment's records end at its end of file or where only zeros are left (a
    preallocated segment). A record cut short at the very end of the last segment
    (a crash mid-write) is truncated away and logged when ``repair``; a bad CRC, a
    length that runs past the end of a segment that is not the last, or a sequence
    break raises JournalError naming the file and offset: never skipped silently. ``ends``, when given, receives
    {segment path: offset where its records end} for the segments read.
    """
    segments = list_segments(directory)
    expect = None
    for i, (first, path) in enumerate(segments):
        last_segment = i == len(segments) - 1
        if i + 1 < len(segments) and segments[i + 1][0] <= after_seq + 1:
            expect = segments[i + 1][0]
            continue  # wholly before what we want
        data = _read(path)
        try:
            torn = None
            off = 0
            while off < len(data):
                rec = _parse(data, off)
                if rec is None:
                    used = _data_end(data, off)  # a zero-filled segment (preallocated) ends where its zeros start
                    if used <= off:
                        if ends is not None:
                            ends[path] = off
                        break
                    later = _valid_record_after(data, off, used)
                    if later >= 0 and last_segment and (not repair or data[off:off + HEADER_SIZE] == _ZERO_HEADER):
                        # Overwriting a zero-filled segment does not keep a crash's tail a clean prefix: the
                        # OS may have written a later page of an unsynced batch and not the one holding this
                        # record's header (never written: all zeros). A completed sync leaves no such hole,
                        # so what follows was never acknowledged. A reader beside the live writer (no repair)
                        # can also overtake the writer mid-write. Either way: the end of the records.
                        log.warning("journal %s: record at offset %d %s; %d bytes after it, valid-looking records "
                                    "from offset %d, are an unsynced tail", path, off,
                                    "not written yet (a reader beside the writer)" if not repair else "never written "
                                    "(a crash lost its page)", used - off, later)
                    elif later >= 0 or not last_segment:
                        raise JournalError("CORRUPT", f"{path} offset {off}: record fails its CRC32C check"
                                           + (f" (a valid record follows at offset {later})" if later >= 0 else ""))
                    torn = (off, used)
                    if ends is not None:
                        ends[path] = off
                    break
                length, seq, recv_ns, kind, payload = rec
                if expect is not None and seq != expect:
                    raise JournalError("CORRUPT", f"{path} offset {off}: sequence {seq}, expected {expect}")
                expect = seq + 1
                if seq > after_seq:
                    yield Record(seq, recv_ns, kind, payload)
                off += HEADER_SIZE + length
            else:
                if ends is not None:
                    ends[path] = off
        finally:
            del data
        if torn is not None:
            _torn(path, *torn, repair)
            return


_ZEROS = bytes(1 << 20)


def _read(path: str) -> bytes:
    """The segment's bytes, read whole. Not mmap: the live writer truncates its segment after a
    failed write while as-of and catch-up readers read it, and a page past the new end of a
    mapping is SIGBUS (a dead daemon), where a read is a copy or an OSError."""
    with open(path, "rb") as f:
        return f.read()


def _data_end(data, off: int) -> int:
    """Where the trailing zeros after ``off`` begin (``off`` or less when only zeros follow it): the
    usual case, the unused rest of a preallocated segment, is checked a megabyte at a time with
    memcmp instead of stripped byte by byte."""
    k, n = off, len(data)
    while k < n:
        chunk = data[k:k + len(_ZEROS)]
        if chunk != _ZEROS[:len(chunk)]:
            return off + len(bytes(data[off:]).rstrip(b"\0"))
        k += len(chunk)
    return off


def _torn(path: str, off: int, used: int, repair: bool) -> None:
    """Cut a torn final record (and the zeros of a preallocated segment after it) away."""
    log.warning("journal %s: torn final record at offset %d (%d bytes); truncating it", path, off, used - off)
    if repair:
        with open(path, "r+b") as f:
            f.truncate(off)
            f.flush()
            os.fsync(f.fileno())


class JournalWriter:
    """Appends records; ``sync`` makes everything appended so far durable.

    ``append`` runs on the engine thread and only writes to the OS; ``sync`` runs
    on the sync thread and only calls fdatasync. After any write or sync error
    the writer is *failed* for good: the process must stop and recover from what
    is on disk (an fsync error may have dropped pages: never retry and believe it).
    """

    def __init__(self, directory: str, next_seq: int, segment_bytes: int = 256 << 20,
                 fault_enospc_after: int = -1, fault_fsync_fail_after: int = -1, preallocate: bool = False,
                 ends: dict[str, int] | None = None):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.next_seq = next_seq
        self.preallocate = preallocate
        self.failed: JournalError | None = None
        self._fault_bytes = fault_enospc_after      # fault injection: ENOSPC once this many bytes were written
        self._fault_syncs = fault_fsync_fail_after  # fault injection: EIO on this sync (counting from 0)
        self._written = 0
        self._lock = threading.Lock()  # a segment roll must not close the fd a sync is using
        self._external_sync = False    # begin_sync / end_sync in use: a roll defers closing the old fd
        self._closing: list[int] = []  # rolled-over fds to close once no sync can be using them
        self._fd = -1
        self._size = 0                 # where the next record goes in the current segment
        self._zeroed = 0               # the current segment is zero-filled (allocated) up to here
        self._spare = os.path.join(directory, SPARE)
        self._preparer: threading.Thread | None = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._spare + ".tmp")  # a fill cut short by a crash
        segs = list_segments(directory)
        if segs:
            self._open(segs[-1][1], (ends or {}).get(segs[-1][1]))  # ends: from the reader that just replayed it
        elif preallocate:
            self._roll()  # the first segment, zero-filled now rather than at the first append
        self._retired_upto = 0

    def _open(self, path: str, end: int | None = None) -> None:
        """Write on from the end of the records already in ``path`` (``end``, or found by reading it)."""
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        self._zeroed = os.fstat(self._fd).st_size
        if end is None:
            ends: dict[str, int] = {}
            for _ in read_records(self.directory, after_seq=self.next_seq - 1, ends=ends):
                pass
            end = ends.get(path, 0)
        self._size = end
        self._half = False  # past half of this segment the next one starts filling
        self._path = path

    def _roll(self) -> None:
        with self._lock:
            old = self._fd
            if old >= 0:
                os.fdatasync(old)  # the finished segment is durable before the next one is used
                if self._external_sync:
                    self._closing.append(old)  # a sync thread may be using it: closed at the next begin_sync
                else:
                    os.close(old)
                self._fd = -1
            path = os.path.join(self.directory, segment_name(self.next_seq))
            existed = os.path.exists(path)  # only an empty one can be (a crash right after a roll)
            if self.preallocate and not existed:
                if not self._filling():
                    if not os.path.exists(self._spare):
                        self._fill_spare()  # the first segment, or the background fill failed: now
                    if os.path.exists(self._spare):
                        os.rename(self._spare, path)
                else:
                    log.warning("journal: the next zero-filled segment is not ready; %s grows by appends", path)
            self._open(path, None if existed else 0)
            fsync_dir(self.directory)

    def _fill_spare(self, pace: bool = False) -> None:
        """Write a zero-filled segment-to-be (SPARE) of ``segment_bytes``: records later overwrite
        allocated blocks, so a sync writes data only, with no file-size or extent change for the
        filesystem to commit. Best effort: on failure (a full disk) segments grow by appends."""
        tmp = self._spare + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                chunk = bytes(FILL_CHUNK)
                for off in range(0, self.segment_bytes, len(chunk)):
                    os.write(fd, chunk[: min(len(chunk), self.segment_bytes - off)])
                    os.fdatasync(fd)  # in small steps: one big writeback would stall the records' syncs
                    if pace:
                        time.sleep(FILL_PAUSE_S)
            finally:
                os.close(fd)
            os.rename(tmp, self._spare)
        except OSError as e:
            log.warning("journal: zero-filling the next segment failed (%s); it will grow by appends", e)
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _filling(self) -> bool:
        return self._preparer is not None and self._preparer.is_alive()

    def _prepare_next(self) -> None:
        """Past half of the current segment: fill the next one on a background thread."""
        if self.preallocate and not self._filling() and not os.path.exists(self._spare):
            self._preparer = threading.Thread(target=self._fill_spare, args=(True,), name="pstate-journal-fill",
                                              daemon=True)
            self._preparer.start()

    def append(self, records: list[tuple[int, int, bytes]]) -> int:
        """Write (recv_ns, kind, payload) records; return the last sequence. Raises JournalError."""
        if self.failed:
            raise self.failed
        if not records:
            return self.next_seq - 1
        if self._fd < 0 or self._size >= self.segment_bytes:
            try:
                self._roll()
            except OSError as e:  # the old segment's last sync, or the new one's creation, failed
                self._fsync_failed(e)
        elif self.preallocate and self._size >= self.segment_bytes // 2 and not self._half:
            self._half = True
            self._prepare_next()
        seq = self.next_seq
        buf = bytearray()
        for recv_ns, kind, payload in records:
            buf += encode_record(seq, recv_ns, kind, payload)
            seq += 1
        try:
            if self._fault_bytes >= 0 and self._written + len(buf) > self._fault_bytes:
                keep = max(0, self._fault_bytes - self._written)
                if keep:
                    os.pwrite(self._fd, bytes(buf[:keep]), self._size)
                raise OSError(errno.ENOSPC, "No space left on device (injected)")
            n = os.pwrite(self._fd, buf, self._size)
            if n != len(buf):
                raise OSError(errno.ENOSPC, f"short write: {n} of {len(buf)} bytes")
        except OSError as e:
            self._undo_partial(len(buf))
            code = "DISK_FULL" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "JOURNAL_IO"
            self.failed = JournalError(code, f"journal write failed: {e}")
            log.error("%s; refusing every mutating command from now on", self.failed)
            raise self.failed from None
        self._written += len(buf)
        self._size += len(buf)
        self.next_seq = seq
        return seq - 1

    def _undo_partial(self, length: int) -> None:
        """Cut a partial write off, so the journal ends on a whole record (best effort): zero it
        where the segment was zero-filled (those blocks are allocated: no space needed), else truncate."""
        try:
            if self._zeroed > self._size:
                os.pwrite(self._fd, bytes(min(self._zeroed - self._size, length)), self._size)
                if self._size + length > self._zeroed:  # the write ran past the zero-filled end
                    os.ftruncate(self._fd, self._zeroed)
            else:
                os.ftruncate(self._fd, self._size)
        except OSError:
            pass  # recovery cuts a torn tail away anyway

    def sync(self) -> None:
        """fdatasync everything appended so far. Raises JournalError; failure is permanent."""
        if self.failed:
            raise self.failed
        try:
            with self._lock:
                self._inject_fsync_fault()
                os.fdatasync(self._fd)
        except OSError as e:
            self._fsync_failed(e)

    def begin_sync(self) -> int:
        """The fd an outside thread (persistence/syncthread.py) is to fdatasync; call when no such sync
        is in flight, then ``end_sync`` with its result. Raises JournalError (failed, or the
        injected fsync failure)."""
        if self.failed:
            raise self.failed
        self._external_sync = True
        while self._closing:
            os.close(self._closing.pop())
        try:
            self._inject_fsync_fault()
        except OSError as e:
            self._fsync_failed(e)
        return self._fd

    def _inject_fsync_fault(self) -> None:
        """Fault injection: the sync numbered ``fault_fsync_fail_after`` (from 0) fails with EIO."""
        if self._fault_syncs == 0:
            raise OSError(errno.EIO, "Input/output error (injected fsync failure)")
        if self._fault_syncs > 0:
            self._fault_syncs -= 1

    def end_sync(self, rc: int, err: int) -> None:
        """The result of the outside fdatasync: rc 0 is durable; anything else fails the writer for good."""
        if rc != 0:
            self._fsync_failed(OSError(err, os.strerror(err) if err else f"fdatasync returned {rc}"))

    def _fsync_failed(self, e: OSError) -> None:
        self.failed = JournalError("JOURNAL_IO", f"fdatasync failed: {e}")
        log.critical("%s: nothing after the last good sync is durable; stopping", self.failed)
        raise self.failed from None

    def retire_before(self, seq: int) -> int:
        """Delete segments whose records all have sequence < seq (covered by a checkpoint). Returns how many."""
        segs = list_segments(self.directory)
        n = 0
        for (first, path), nxt in zip(segs, segs[1:]):
            if nxt[0] <= seq and path != self._path:
                os.unlink(path)
                n += 1
        if n:
            fsync_dir(self.directory)
        return n

    def close(self) -> None:
        if self._preparer is not None:
            self._preparer.join()
        while self._closing:
            os.close(self._closing.pop())
        if self._fd >= 0:
            try:
                if not self.failed:
                    os.fdatasync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def last_seq(directory: str, repair: bool = True) -> int:
    """The last valid sequence on disk (repairing a torn tail unless ``repair`` is false: a reader
    beside a running writer must not), 0 when empty."""
    last = 0
    for rec in read_records(directory, repair=repair):
        last = rec.seq
    return last
