"""Durability with real daemon processes: restart equality, exactly-once retries across a crash,
a full disk, a failed fsync, a corrupt journal, as-of queries, and the fsync modes."""
import os
import re
import signal
import time

import msgspec
import psutil
import pytest

from portfolio_state.persistence.journal import HEADER_SIZE, list_segments
from portfolio_state.transport import messages as m
from portfolio_state.transport.client import CommandError
from tests.integration.conftest import seed
from tests.integration.daemon_proc import DaemonProcess


def full_state(c, pid="P1") -> bytes:
    """Everything a state query answers except the event sequence, as bytes (NaN-safe equality)."""
    st = c.state(pid)
    return msgspec.msgpack.encode((st.portfolio_state, st.positions, st.cash, st.exposures, st.margin))


def trade_some(c, n=20, key_prefix="t"):
    for i in range(n):
        c.update_position("P1", f"pos{i % 4}", ["AAPL", "XOM", "SAP", "AAPL"][i % 4] if i % 4 != 3 else "AAPL",
                          "BUY" if i % 3 else "SELL", 10 + i, 100.0 + i, key=f"{key_prefix}-{i}") if i % 4 != 3 else \
            c.update_position("P1", "pos0", "AAPL", "BUY", 1, 190.0, key=f"{key_prefix}-{i}")
    c.prices({"AAPL": 195.5, "SAP": 118.25})


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_restart_recovers_exactly_the_same_state(tmp_path, how):
    d = DaemonProcess(tmp_path, "tcp")
    d.wait_ready()
    with d.client() as c:
        seed(c)
        trade_some(c)
        before = full_state(c)
        before_p2 = full_state(c, "P2")
    if how == signal.SIGKILL:
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
    d.stop()
    d2 = DaemonProcess(tmp_path, "tcp", data_dir=d.data_dir)
    d2.wait_ready()
    try:
        with d2.client() as c:
            assert full_state(c) == before
            assert full_state(c, "P2") == before_p2
            # exactly once: the same key again returns the original and changes nothing
            again = c.call(c.position_update("P1", "pos0", "AAPL", "SELL", 10, 100.0, key="t-0"))  # as first sent
            assert isinstance(again, m.PositionUpdateResponse)
            assert full_state(c) == before
        if how == signal.SIGTERM:
            assert "checkpoint" in d.output()
            assert "+ 0 journal records replayed" in d2.output()
        else:
            assert "journal records replayed" in d2.output()
    finally:
        assert d2.stop() == 0, d2.output()


def test_disk_full_refuses_changes_keeps_reads_and_never_acks(tmp_path):
    d = DaemonProcess(tmp_path, "tcp", extra=["--set", "journal.fault_enospc_after_bytes=3000"])
    d.wait_ready()
    acked = 0
    refused = 0
    with d.client() as c:
        seed(c)
        for i in range(100):
            try:
                c.update_position("P1", "pos", "AAPL", "BUY", 1, 190.0, key=f"k{i}")
                acked += 1
            except CommandError as e:
                assert e.code == "DISK_FULL"
                refused += 1
        assert refused > 0 and acked > 0
        st = c.state("P1")  # reads still served
        assert st.positions[0].quantity == acked
        h = c.health()
        assert h.status == "unhealthy" and h.details["journal"] == "DISK_FULL"
    assert d.stop() == 0
    d2 = DaemonProcess(tmp_path, "tcp", data_dir=d.data_dir)
    d2.wait_ready()
    with d2.client() as c:
        assert c.state("P1").positions[0].quantity == acked  # exactly what was acknowledged
    assert d2.stop() == 0


def test_fsync_failure_is_fail_stop_with_no_ack(tmp_path):
    d = DaemonProcess(tmp_path, "tcp", extra=["--set", "journal.fault_fsync_fail_after=12"])
    d.wait_ready()
    acked = []
    with d.client(retries=0, timeout=3.0) as c:
        try:
            seed(c)
            for i in range(50):
                r = c.call(c.position_update("P1", "pos", "AAPL", "BUY", 1, 190.0, key=f"k{i}"))
                if isinstance(r, m.ErrorReply):
                    assert r.code == "JOURNAL_IO"
                    break
                acked.append(i)
        except (CommandError, TimeoutError):
            pass
    d.proc.wait(30)
    assert d.proc.returncode == 1, d.output()
    assert "journal sync failed" in d.output()
    d.stop()
    d2 = DaemonProcess(tmp_path, "tcp", data_dir=d.data_dir)
    d2.wait_ready()
    try:
        with d2.client() as c:
            q = c.state("P1").positions[0].quantity if c.metrics()["portfolios"] else 0
            # every acknowledged update survived; the unacknowledged one may or may not have (outcome
            # unknown): its retry with the same key settles it exactly once
            assert q >= len(acked)
            nxt = len(acked)
            c.update_position("P1", "pos", "AAPL", "BUY", 1, 190.0, key=f"k{nxt}")
            assert c.state("P1").positions[0].quantity == len(acked) + 1
    finally:
        assert d2.stop() == 0


def test_corrupt_journal_refuses_to_start_naming_file_and_offset(tmp_path):
    d = DaemonProcess(tmp_path, "tcp", extra=["--set", "journal.checkpoint_interval_s=0"])
    d.wait_ready()
    with d.client() as c:
        seed(c)
        trade_some(c)
    d.proc.send_signal(signal.SIGKILL)  # no shutdown checkpoint: recovery must read the journal
    d.stop()
    jdir = os.path.join(d.data_dir, "journal")
    (_, seg), = list_segments(jdir)
    with open(seg, "r+b") as f:
        f.seek(HEADER_SIZE + 40)
        b = f.read(1)
        f.seek(HEADER_SIZE + 40)
        f.write(bytes([b[0] ^ 0x40]))
    d2 = DaemonProcess(tmp_path, "tcp", data_dir=d.data_dir)
    d2.proc.wait(60)
    assert d2.proc.returncode == 3
    out = d2.output()
    assert "cannot recover" in out and seg in out and "offset" in out
    d2.stop()


def test_as_of_timestamp_replays_to_that_moment(tmp_path):
    d = DaemonProcess(tmp_path, "tcp", extra=["--set", "journal.checkpoint_interval_s=0.3"])
    d.wait_ready()
    try:
        with d.client() as c:
            seed(c)
            c.update_position("P1", "a", "AAPL", "BUY", 10, 190.0)
            time.sleep(0.5)  # a checkpoint lands in between
            t_mid = time.time_ns()
            time.sleep(0.05)
            c.update_position("P1", "a", "AAPL", "BUY", 5, 191.0)
            c.cash_flow("P1", 1000.0)
            past = c.state("P1", as_of_timestamp=t_mid)
            now = c.state("P1")
            assert past.positions[0].quantity == 10 and now.positions[0].quantity == 15
            assert past.cash["USD"] == 1_000_000 - 1900 and now.cash["USD"] == 1_000_000 - 1900 - 955 + 1000
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("mode", ["interval", "off"])
def test_other_fsync_modes_ack_and_recover_after_clean_stop(tmp_path, mode):
    d = DaemonProcess(tmp_path, "tcp", extra=["--set", f"journal.fsync={mode}"])
    d.wait_ready()
    with d.client() as c:
        seed(c)
        trade_some(c)
        before = full_state(c)
        assert c.metrics()["journal"]["fsync"] == mode
    assert d.stop() == 0
    if mode == "off":
        assert "NOT durable" in d.output()
    d2 = DaemonProcess(tmp_path, "tcp", data_dir=d.data_dir)
    d2.wait_ready()
    with d2.client() as c:
        assert full_state(c) == before
    assert d2.stop() == 0


@pytest.mark.parametrize("window", [8, 128])
def test_pipelined_requests_all_get_durable_replies(tmp_path, window):
    """Regression: replies released by a finished sync consumed the ROUTER's edge-triggered wake-up,
    and with several requests in flight the daemon stopped reading for good."""
    import zmq

    d = DaemonProcess(tmp_path, "tcp")
    d.wait_ready()
    try:
        with d.client() as c:
            seed(c)
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, 10_000)
        s.connect(d.command)
        enc = msgspec.msgpack.Encoder()
        n, sent, got = 2000, 0, 0
        while got < n:
            while sent < n and sent - got < window:
                s.send_multipart([b"%d" % sent, enc.encode(m.PositionUpdateRequest(f"w{sent}", "P1", "pos", "AAPL", 1.0,
                                                                                  190.0, "BUY"))])
                sent += 1
            s.recv_multipart()  # zmq.Again (a stall) fails the test
            got += 1
        s.close()
        with d.client() as c:
            assert c.state("P1").positions[0].quantity == n
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("fork,arena", [("true", False), ("true", True), ("false", False)],
                         ids=["fork-private", "fork-shm", "thread"])
def test_periodic_checkpoints_restore_state_and_window_after_kill(tmp_path, fork, arena):
    """Periodic checkpoints, from a forked child (the default) or a thread: after kill -9 the
    daemon restarts from the newest one (not from the start of the journal), with the same state
    and the same idempotency window; a forked writer dies with its parent. A book in private
    memory is snapshotted by the child itself (copy-on-write); one in a shared-memory arena is
    copied by the engine before the fork."""
    extra = ["--set", "journal.checkpoint_interval_s=0.2", "--set", f"journal.checkpoint_fork={fork}"]
    if arena:
        shm_dir = tmp_path / "shm"
        shm_dir.mkdir()
        extra += ["--set", f"book.shm_name=ckpt{os.getpid()}", "--set", f"book.shm_dir={shm_dir}"]
    d = DaemonProcess(tmp_path, "tcp", extra=extra)
    d.wait_ready()
    with d.client() as c:
        seed(c)
        trade_some(c)
        deadline = time.time() + 30
        while time.time() < deadline and len(re.findall(r"checkpoint \S+\.ckpt \(seq", d.output())) < 2:
            time.sleep(0.1)
        trade_some(c, n=8, key_prefix="late")
        before = full_state(c)
    out = d.output()
    assert ("ms + fork" in out) == (fork == "true"), out
    if fork == "true":
        assert ("copy-on-write, snapshot in the child" in out) == (not arena), out
    parent = psutil.Process(d.proc.pid)
    kids = parent.children()
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.stop()
    _, alive = psutil.wait_procs(kids, timeout=10)
    assert alive == [], f"checkpoint children outlived their parent: {alive}"
    d2 = DaemonProcess(tmp_path, "tcp", data_dir=d.data_dir)
    d2.wait_ready()
    try:
        with d2.client() as c:
            assert full_state(c) == before
            again = c.call(c.position_update("P1", "pos0", "AAPL", "SELL", 10, 100.0, key="t-0"))  # as first sent
            assert isinstance(again, m.PositionUpdateResponse)
            assert full_state(c) == before
        got = re.search(r"recovered: checkpoint seq (\d+)", d2.output())
        assert got and int(got.group(1)) > 0, d2.output()
    finally:
        assert d2.stop() == 0, d2.output()


def test_sigusr1_writes_a_checkpoint_now(tmp_path):
    """An operator's checkpoint before maintenance (and perf/bench_checkpoint.py's): SIGUSR1 writes
    one now, with periodic checkpoints off; without a journal it is refused in the log, harmlessly."""
    d = DaemonProcess(tmp_path, "tcp", extra=["--set", "journal.checkpoint_interval_s=0"])
    d.wait_ready()
    try:
        with d.client() as c:
            seed(c)
            trade_some(c)
            before = full_state(c)
            d.proc.send_signal(signal.SIGUSR1)
            deadline = time.time() + 30
            while time.time() < deadline and not re.search(r"checkpoint \S+\.ckpt \(seq [1-9]", d.output()):
                time.sleep(0.1)
            assert "SIGUSR1: checkpoint asked" in d.output(), d.output()
            assert re.search(r"checkpoint \S+\.ckpt \(seq [1-9]", d.output()), d.output()
            assert full_state(c) == before
    finally:
        assert d.stop() == 0, d.output()
    (tmp_path / "bare").mkdir()
    bare = DaemonProcess(tmp_path / "bare", "tcp", extra=["--set", "journal.data_dir=", "--set", "sink.backend=none"])
    bare.wait_ready()
    try:
        bare.proc.send_signal(signal.SIGUSR1)
        deadline = time.time() + 10
        while time.time() < deadline and "SIGUSR1: no journal" not in bare.output():
            time.sleep(0.1)
        assert "SIGUSR1: no journal" in bare.output(), bare.output()
        with bare.client() as c:
            seed(c)  # still serving
    finally:
        assert bare.stop() == 0, bare.output()


def test_a_forked_checkpoint_that_gave_the_book_back_recovers_the_state(tmp_path):
    """ADR 0023: the forked writer gives each piece of the book back once it is in the file (arrays
    first, meta after), around a copy-on-write reserve freed for the fork and filled again after.
    A kill -9 after that checkpoint, then a restart: it is loaded, the records after it are
    replayed, and the state is the one served before the kill."""
    extra = ["--set", "journal.checkpoint_interval_s=0", "--set", "journal.checkpoint_cow_reserve_mb=8",
             "--set", "sink.backend=none"]
    d = DaemonProcess(tmp_path, "tcp", extra=extra)
    d.wait_ready()
    try:
        with d.client() as c:
            seed(c)
            trade_some(c)
            d.proc.send_signal(signal.SIGUSR1)
            deadline = time.time() + 30
            while time.time() < deadline and d.output().count("copy-on-write reserve of 8 MiB filled") < 2:
                time.sleep(0.1)
            out = d.output()
            assert re.search(r"checkpoint \S+\.ckpt \(seq [1-9]\d*\) in [\d.]+s \(meta", out), out
            assert out.count("copy-on-write reserve of 8 MiB filled") == 2, out  # at start, after the child
            trade_some(c, key_prefix="after")  # replayed from the journal after the checkpoint
            before = full_state(c)
    finally:
        d.stop(signal.SIGKILL)
    d2 = DaemonProcess(tmp_path, "tcp", extra=extra, data_dir=d.data_dir)
    d2.wait_ready()
    try:
        assert re.search(r"recovered: checkpoint seq [1-9]\d* \+ [1-9]\d* journal records", d2.output()), d2.output()
        with d2.client() as c:
            assert full_state(c) == before
    finally:
        assert d2.stop() == 0, d2.output()


def test_as_of_before_retired_history_is_an_error_not_a_wrong_state(tmp_path):
    """Once a checkpoint has retired the journal's first segments, an as-of time before it cannot
    be rebuilt: HISTORY_RETIRED, never the state of the records that happen to remain."""
    d = DaemonProcess(tmp_path, "tcp", extra=["--set", "journal.checkpoint_interval_s=0", "--set",
                                              "journal.segment_bytes=16384", "--set", "journal.checkpoints_kept=1",
                                              "--set", "sink.backend=none"])
    d.wait_ready()
    try:
        with d.client() as c:
            seed(c)
            t_early = time.time_ns()
            time.sleep(0.02)
            for i in range(300):
                c.update_position("P1", f"p{i % 7}", "AAPL", "BUY", 1, 190.0, key=f"h-{i}")
            d.proc.send_signal(signal.SIGUSR1)
            deadline = time.time() + 30
            while time.time() < deadline and "journal segments before seq" not in d.output():
                time.sleep(0.1)
            assert "journal segments before seq" in d.output(), d.output()
            with pytest.raises(CommandError) as e:
                c.state("P1", as_of_timestamp=t_early)
            assert e.value.code == "HISTORY_RETIRED"
            now = c.state("P1")
            assert c.state("P1", as_of_timestamp=time.time_ns()).positions == now.positions  # later: fine
    finally:
        assert d.stop() == 0, d.output()
