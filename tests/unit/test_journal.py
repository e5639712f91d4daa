"""The journal and checkpoints on their own: torn tails, bit flips, full disks, failed syncs."""
import errno
import logging
import os
import pathlib
import struct

import numpy as np
import pytest

from portfolio_state.persistence import checkpoint as ckpt
from portfolio_state.persistence.journal import (
    COMMAND,
    FEED_PRICES,
    HEADER_SIZE,
    JournalError,
    JournalWriter,
    last_seq,
    list_segments,
    read_records,
)


def fill(d, n=10, segment_bytes=1 << 20):
    w = JournalWriter(str(d), 1, segment_bytes)
    for i in range(n):
        w.append([(1000 + i, COMMAND if i % 3 else FEED_PRICES, f"payload-{i}".encode() * (i + 1))])
    w.sync()
    w.close()
    return [f"payload-{i}".encode() * (i + 1) for i in range(n)]


def test_round_trip_sequences_and_segments(tmp_path):
    payloads = fill(tmp_path, 50, segment_bytes=512)
    assert len(list_segments(str(tmp_path))) > 3
    recs = list(read_records(str(tmp_path)))
    assert [r.seq for r in recs] == list(range(1, 51))
    assert [r.payload for r in recs] == payloads
    assert [r.recv_ns for r in recs] == [1000 + i for i in range(50)]
    assert [r.seq for r in read_records(str(tmp_path), after_seq=47)] == [48, 49, 50]
    w = JournalWriter(str(tmp_path), 51, 512)
    assert w.retire_before(30) > 0
    assert [r.seq for r in read_records(str(tmp_path), after_seq=29)][:1] == [30]
    w.close()


def test_torn_last_record_at_every_offset_recovers_the_rest(tmp_path, caplog):
    src = tmp_path / "src"
    src.mkdir()
    fill(src, 5)
    (seg,) = [p for _, p in list_segments(str(src))]
    data = pathlib.Path(seg).read_bytes()
    last_len = len(data) - sum(HEADER_SIZE + len(f"payload-{i}".encode() * (i + 1)) for i in range(4))
    start = len(data) - last_len
    for cut in range(start, len(data)):  # every byte of the last record, header included
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / os.path.basename(seg)).write_bytes(data[:cut])
        with caplog.at_level(logging.WARNING):
            got = [r.seq for r in read_records(str(d))]
        assert got == [1, 2, 3, 4], cut
        assert os.path.getsize(d / os.path.basename(seg)) == start  # truncated to the last whole record
    assert "torn final record" in caplog.text


@pytest.mark.parametrize("where", ["header", "payload", "length"])
def test_bit_flip_in_an_earlier_record_refuses_with_file_and_offset(tmp_path, where):
    fill(tmp_path, 6)
    (seg,) = [p for _, p in list_segments(str(tmp_path))]
    data = bytearray(pathlib.Path(seg).read_bytes())
    off = HEADER_SIZE + len(b"payload-0")  # the second record
    pos = {"header": off + 6, "payload": off + HEADER_SIZE + 3, "length": off + 1}[where]
    data[pos] ^= 0x10
    pathlib.Path(seg).write_bytes(bytes(data))
    with pytest.raises(JournalError) as e:
        list(read_records(str(tmp_path)))
    assert e.value.code == "CORRUPT" and seg in str(e.value) and f"offset {off}" in str(e.value)


def test_injected_enospc_refuses_and_leaves_whole_records(tmp_path):
    w = JournalWriter(str(tmp_path), 1, fault_enospc_after=200)
    w.append([(1, COMMAND, b"x" * 50)])
    with pytest.raises(JournalError) as e:
        w.append([(2, COMMAND, b"y" * 500)])
    assert e.value.code == "DISK_FULL"
    with pytest.raises(JournalError):
        w.append([(3, COMMAND, b"z")])  # failed for good
    w.close()
    assert [r.payload for r in read_records(str(tmp_path))] == [b"x" * 50]


def test_injected_fsync_failure_is_permanent(tmp_path):
    w = JournalWriter(str(tmp_path), 1, fault_fsync_fail_after=1)
    w.append([(1, COMMAND, b"a")])
    w.sync()
    w.append([(2, COMMAND, b"b")])
    with pytest.raises(JournalError) as e:
        w.sync()
    assert e.value.code == "JOURNAL_IO"
    with pytest.raises(JournalError):
        w.sync()  # never retried and believed
    with pytest.raises(JournalError):
        w.append([(3, COMMAND, b"c")])
    w.close()
    assert last_seq(str(tmp_path)) == 2


def test_checkpoint_round_trip_and_fallback(tmp_path, caplog):
    arrays = {"a": np.arange(10, dtype=np.int64), "rec": np.zeros(3, dtype=[("x", "<i8"), ("y", "<f8")])}
    ckpt.write_checkpoint(str(tmp_path), 5, arrays, b"meta-5")
    p7 = ckpt.write_checkpoint(str(tmp_path), 7, {**arrays, "a": arrays["a"] * 2}, b"meta-7")
    seq, got, meta = ckpt.load_newest(str(tmp_path))
    assert (seq, meta) == (7, b"meta-7") and np.array_equal(got["a"], arrays["a"] * 2)
    data = bytearray(pathlib.Path(p7).read_bytes())
    data[len(data) // 2] ^= 1
    pathlib.Path(p7).write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        seq, got, meta = ckpt.load_newest(str(tmp_path))
    assert (seq, meta) == (5, b"meta-5") and "falling back" in caplog.text
    assert not any(n.endswith(".tmp") for n in os.listdir(tmp_path))
    assert ckpt.retire_checkpoints(str(tmp_path), 1) == [7]


def test_truncated_checkpoint_is_skipped(tmp_path):
    p = ckpt.write_checkpoint(str(tmp_path), 3, {"a": np.ones(4)}, b"m")
    os.truncate(p, 30)
    assert ckpt.load_newest(str(tmp_path)) is None
    assert struct.calcsize("<I") == 4


# ------------------------------------------------------------------ preallocated (zero-filled) segments
def _payloads(w, first, n, size=40):
    out = []
    for i in range(first, first + n):
        p = f"r{i:05d}".encode() * (size // 6 + 1)
        w.append([(i, COMMAND, p)])
        out.append(p)
    return out


def test_preallocated_segments_are_zero_filled_and_read_back_whole(tmp_path):
    d = str(tmp_path)
    (tmp_path / "next-segment.zero.tmp").write_bytes(b"\0" * 10)  # a fill cut short by a crash
    w = JournalWriter(d, 1, segment_bytes=8192, preallocate=True)
    assert not (tmp_path / "next-segment.zero.tmp").exists()
    (first,) = [p for _, p in list_segments(d)]
    assert os.path.getsize(first) == 8192 and pathlib.Path(first).read_bytes() == bytes(8192)
    want = _payloads(w, 1, 60)  # ~3.5 KiB: under half, no spare yet
    w.sync()
    assert not (tmp_path / "next-segment.zero").exists()
    want += _payloads(w, 61, 20)  # past half: the spare fills, on a thread
    w._preparer.join()
    assert os.path.getsize(tmp_path / "next-segment.zero") == 8192
    want += _payloads(w, 81, 130)  # past the end: the spare becomes the next segment
    w.sync()
    w.close()
    segs = [p for _, p in list_segments(d)]
    assert len(segs) >= 2 and all(os.path.getsize(p) >= 8192 for p in segs[:2])  # later ones: if their spare was ready
    assert [r.payload for r in read_records(d)] == want
    assert [r.seq for r in read_records(d)] == list(range(1, 211))


@pytest.mark.parametrize("told", [True, False])
def test_a_restarted_writer_goes_on_where_the_records_end_not_where_the_file_does(tmp_path, told):
    d = str(tmp_path)
    w = JournalWriter(d, 1, segment_bytes=1 << 16, preallocate=True)
    want = _payloads(w, 1, 10)
    w.sync()
    w.close()
    ends = {}
    assert [r.payload for r in read_records(d, ends=ends)] == want
    (seg,) = ends
    assert 0 < ends[seg] < os.path.getsize(seg) == 1 << 16
    w = JournalWriter(d, 11, segment_bytes=1 << 16, preallocate=True, ends=ends if told else None)
    want += _payloads(w, 11, 5)
    w.sync()
    w.close()
    assert [r.payload for r in read_records(d)] == want and len(list_segments(d)) == 1


def test_a_torn_record_before_the_zeros_is_cut_and_damage_before_a_valid_record_is_not(tmp_path, caplog):
    d = str(tmp_path)
    w = JournalWriter(d, 1, segment_bytes=1 << 16, preallocate=True)
    want = _payloads(w, 1, 5)
    w.close()
    ends = {}
    list(read_records(d, ends=ends))
    (seg,) = ends
    with open(seg, "r+b") as f:  # half a record after the last whole one, then the zeros
        f.seek(ends[seg])
        f.write(b"\x07" * 20)
    with caplog.at_level(logging.WARNING):
        assert [r.payload for r in read_records(d)] == want
    assert "torn final record" in caplog.text and os.path.getsize(seg) == ends[seg]
    with open(seg, "r+b") as f:  # a flipped bit in record 2 of 5: never skipped
        f.seek(HEADER_SIZE + len(want[0]) + HEADER_SIZE + 3)
        f.write(b"\xff")
    with pytest.raises(JournalError, match=r"offset \d+: record fails its CRC32C check \(a valid record follows"):
        list(read_records(d))


def test_a_full_disk_mid_write_in_a_preallocated_segment_leaves_whole_records(tmp_path):
    d = str(tmp_path)
    w = JournalWriter(d, 1, segment_bytes=1 << 16, preallocate=True, fault_enospc_after=250)
    want = _payloads(w, 1, 3)  # 3 x 71 bytes; the 4th is cut at 250
    with pytest.raises(JournalError) as e:
        _payloads(w, 4, 1)
    assert e.value.code == "DISK_FULL"
    w.close()
    assert [r.payload for r in read_records(d)] == want


def test_a_crash_hole_in_the_unsynced_tail_of_a_zero_filled_segment_ends_the_records(tmp_path, caplog):
    """Overwriting a zero-filled file, a power loss can keep a later page of an unsynced batch and
    lose the page holding a record's header. A completed sync leaves no hole, so the records after
    such a never-written header were never acknowledged: recovery ends there. In a segment that is
    not the last (synced whole at its roll) the same hole is damage."""
    d = str(tmp_path)
    w = JournalWriter(d, 1, segment_bytes=1 << 16, preallocate=True)
    w.append([(1, COMMAND, b"a" * 100)])
    w.sync()
    synced_end = w._size
    w.append([(2, COMMAND, b"b" * 5000), (3, COMMAND, b"c" * 100)])  # never synced
    w.close()
    (seg,) = [p for _, p in list_segments(d)]
    with open(seg, "r+b") as f:  # the page holding record 2's header was lost, record 3's page kept
        f.seek(synced_end)
        f.write(bytes(4096))
    with caplog.at_level(logging.WARNING):
        assert [r.seq for r in read_records(d, repair=False)] == [1]  # a reader beside a writer: no change
        assert os.path.getsize(seg) == 1 << 16
        assert [r.seq for r in read_records(d)] == [1]
    assert "never written (a crash lost its page)" in caplog.text
    assert os.path.getsize(seg) == synced_end  # cut there, as a torn tail is
    w = JournalWriter(d, 2, segment_bytes=1 << 16, preallocate=True)
    w.append([(4, COMMAND, b"d")])
    w.close()
    assert [r.payload for r in read_records(d)] == [b"a" * 100, b"d"]


def test_the_same_hole_in_a_segment_before_the_last_is_damage(tmp_path):
    d = str(tmp_path)
    w = JournalWriter(d, 1, segment_bytes=6000, preallocate=True)
    w.append([(1, COMMAND, b"a" * 100)])
    w.append([(2, COMMAND, b"b" * 6000), (3, COMMAND, b"c" * 100)])  # past segment_bytes
    w.append([(4, COMMAND, b"d")])  # rolls: the first segment is synced whole
    w.sync()
    w.close()
    first = list_segments(d)[0][1]
    with open(first, "r+b") as f:
        f.seek(HEADER_SIZE + 100)
        f.write(bytes(4096))
    assert len(list_segments(d)) == 2
    with pytest.raises(JournalError, match="CORRUPT"):
        list(read_records(d))


def test_a_full_disk_past_the_zero_filled_end_cuts_the_file_back_to_it(tmp_path):
    d = str(tmp_path)
    w = JournalWriter(d, 1, segment_bytes=4096, preallocate=True, fault_enospc_after=4096 + 100)
    want = [w.append([(i, COMMAND, bytes([65 + i]) * 971)]) and bytes([65 + i]) * 971 for i in range(4)]  # 4 x 1000 B
    with pytest.raises(JournalError, match="DISK_FULL"):
        w.append([(9, COMMAND, b"z" * 500)])  # from 4000: 96 bytes in the zeros, then past the end
    (seg,) = [p for _, p in list_segments(d)]
    assert os.path.getsize(seg) == 4096
    w.close()
    assert [r.payload for r in read_records(d)] == want


def test_a_failed_sync_at_a_segment_roll_fails_the_writer(tmp_path, monkeypatch):
    from portfolio_state.persistence import journal

    w = JournalWriter(str(tmp_path), 1, segment_bytes=100)
    w.append([(1, COMMAND, b"a" * 200)])

    def eio(fd):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(journal.os, "fdatasync", eio)
    with pytest.raises(JournalError) as e:
        w.append([(2, COMMAND, b"b")])  # rolls: the finished segment's sync fails
    assert e.value.code == "JOURNAL_IO" and w.failed
    monkeypatch.undo()
    with pytest.raises(JournalError):
        w.sync()
    w.close()
