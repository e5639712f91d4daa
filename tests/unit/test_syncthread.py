"""The nogil fdatasync thread and the journal's outside-sync protocol (begin_sync / end_sync)."""
import errno
import os
import select

import pytest

from portfolio_state.persistence import syncthread
from portfolio_state.persistence.journal import COMMAND, JournalError, JournalWriter, read_records

pytestmark = pytest.mark.skipif(not syncthread.available(), reason="eventfd is Linux only")


def wait(t: syncthread.SyncThread):
    assert select.select([t.fileno()], [], [], 10)[0], "no completion within 10 s"
    return t.collect()


def test_syncs_report_their_result_and_the_thread_stops(tmp_path):
    t = syncthread.SyncThread()
    try:
        assert t.collect() is None  # nothing requested, nothing completed
        fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
        for _ in range(3):
            os.write(fd, b"x" * 100)
            t.request(fd)
            assert wait(t) == (0, 0)
        os.close(fd)
        r, w = os.pipe()  # fdatasync on a pipe fails: EINVAL; on a closed fd: EBADF
        t.request(r)
        assert wait(t) == (-1, errno.EINVAL)
        os.close(r), os.close(w)
        t.request(r)
        assert wait(t) == (-1, errno.EBADF)
    finally:
        t.close()
    assert not t._thread.is_alive()


def test_a_failed_outside_sync_fails_the_journal_for_good(tmp_path):
    w = JournalWriter(str(tmp_path), 1)
    w.append([(1, COMMAND, b"a")])
    w.end_sync(*(0, 0))
    with pytest.raises(JournalError, match="fdatasync failed: .*Input/output error") as e:
        w.end_sync(-1, errno.EIO)
    assert e.value.code == "JOURNAL_IO"
    with pytest.raises(JournalError):
        w.begin_sync()  # never retried and believed
    with pytest.raises(JournalError):
        w.append([(2, COMMAND, b"b")])
    w.close()


def test_the_injected_fsync_failure_also_fails_an_outside_sync(tmp_path):
    w = JournalWriter(str(tmp_path), 1, fault_fsync_fail_after=1)
    w.append([(1, COMMAND, b"a")])
    w.begin_sync()
    w.end_sync(0, 0)
    w.append([(2, COMMAND, b"b")])
    with pytest.raises(JournalError, match="injected"):
        w.begin_sync()
    assert w.failed
    w.close()


def test_a_roll_during_an_outside_sync_keeps_the_old_segment_open_until_the_next(tmp_path):
    w = JournalWriter(str(tmp_path), 1, segment_bytes=200)
    t = syncthread.SyncThread()
    try:
        w.append([(1, COMMAND, b"a" * 300)])
        old = w.begin_sync()
        t.request(old)
        w.append([(2, COMMAND, b"b")])  # rolls to a new segment while the sync may be running
        assert w._fd != old
        os.fstat(old)  # still open: the sync thread may be using it
        w.end_sync(*wait(t))
        new = w.begin_sync()  # no sync in flight now: the old fd is closed
        assert new == w._fd
        with pytest.raises(OSError):
            os.fstat(old)
        t.request(new)
        w.end_sync(*wait(t))
    finally:
        t.close()
        w.close()
    assert [r.payload for r in read_records(str(tmp_path))] == [b"a" * 300, b"b"]
