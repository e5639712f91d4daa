"""The journal and checkpoints on their own: torn tails, bit flips, full disks, failed syncs."""
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
