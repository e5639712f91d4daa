"""The write-behind's pacing (sink.max_busy) and the embedded store's upsert.

The pacing runs the real WriteBehind thread against an in-memory store (a port
implementation, as the unit tests allow); the upsert runs against a real DuckDB file.
"""
import asyncio
import os
import threading
import time

import pytest
from portfolio_state.daemon.config import SettingsError, load
from portfolio_state.daemon.writebehind import WriteBehind
from portfolio_state.persistence.changes import ChangeSet, tables
from portfolio_state.persistence.duckstore import DuckDBStore
from tests.bookfactory import hand_off


def _cs(seq: int, ids: list[str], qty: list[int], slots: list[int] | None = None) -> ChangeSet:
    return hand_off(seq, dict(zip(ids, qty)), slots)


def test_a_run_of_hand_offs_upserts_positions_in_slot_order_once_each():
    # each hand-off is in slot order; the run of three, deduplicated, is not until sorted
    run = [_cs(1, ["s1", "s5", "s9"], [1, 1, 1], [1, 5, 9]), _cs(2, ["s2", "s5"], [2, 2], [2, 5]),
           _cs(3, ["s0", "s9"], [3, 3], [0, 9])]
    pos = tables(run)["positions"]
    assert list(pos["position_id"]) == ["s0", "s1", "s2", "s5", "s9"]
    assert (pos["quantity"] // 1_000_000).tolist() == [3, 1, 2, 2, 3]   # the last row of each key
    assert "_slot" not in pos
    assert len(tables(run)["position_changes_ts"]["position_id"]) == 7  # history keeps every hand-off's row


def test_duckdb_upsert_updates_known_keys_inserts_new_ones_and_never_duplicates(tmp_path):
    async def go():
        store = DuckDBStore(str(tmp_path / "s.duckdb"), "j", threads=1)
        assert await store.open() == -1
        await store.write(tables([_cs(1, ["a", "b"], [1, 2])]), 1)
        await store.write(tables([_cs(2, ["a", "b"], [3, 4])]), 2)        # every key known: update only
        await store.write(tables([_cs(3, ["b", "c"], [5, 6])]), 3)        # one known, one new
        rows = {r["position_id"]: float(r["quantity"]) for r in await store.read("positions")}
        changes = await store.read("position_changes_ts")
        threads = store.con.execute("SELECT current_setting('threads')").fetchone()[0]
        assert await store.watermark() == 3
        await store.close()
        return rows, changes, threads

    rows, changes, threads = asyncio.run(go())
    assert rows == {"a": 3.0, "b": 5.0, "c": 6.0}
    assert len(changes) == 6  # appended: one row per position per hand-off
    assert int(threads) == 1


class _SlowStore:
    """An in-memory store whose every write takes ``cost`` seconds."""
    name = "memory"
    timescale = False

    def __init__(self, cost: float):
        self.cost, self.mark, self.starts, self.ends = cost, -1, [], []

    async def open(self) -> int:
        return self.mark

    async def watermark(self) -> int:
        return self.mark

    async def last_txn(self):
        return None

    async def write(self, tabs, seq_hi, txn=""):
        self.starts.append(time.perf_counter())
        await asyncio.sleep(self.cost)
        self.mark = seq_hi
        self.ends.append(time.perf_counter())

    async def close(self) -> None:
        pass


def _writebehind(tmp_path, store, busy: float) -> WriteBehind:
    settings = load(None, [f"journal.data_dir={tmp_path}", f"sink.max_busy={busy}", "sink.queue_max=4"])
    return WriteBehind(settings, -1, "j", store=store)


def _fed(tmp_path, cost: float, busy: float, seconds: float) -> tuple[WriteBehind, _SlowStore]:
    """A thread over a store whose writes take ``cost`` s, offered a hand-off every 2 ms for
    ``seconds``, then drained."""
    store = _SlowStore(cost)
    wb = _writebehind(tmp_path, store, busy)
    wb.start()
    deadline = time.perf_counter() + seconds
    seq = 0
    while time.perf_counter() < deadline:
        if wb.offer(_cs(seq + 1, [f"p{seq}"], [1])):
            seq += 1
        time.sleep(0.002)
    assert wb.drain(10.0)
    return wb, store


def test_max_busy_rests_after_each_write_and_changes_wait_meanwhile(tmp_path):
    wb, store = _fed(tmp_path, 0.04, 0.25, 1.0)
    gaps = [s - e for e, s in zip(store.ends, store.starts[1:])]
    assert len(store.starts) >= 3
    # each write took ~40 ms, so the thread waits ~120 ms before the next (timer slack allowed)
    assert min(gaps[:-1]) >= 0.1, gaps
    st = wb.status(0)
    assert 0.1 <= st["busy"] <= 0.35, st   # timer slack on a loaded machine only lowers it
    assert store.mark == wb.persisted and wb.persisted >= 1


def test_max_busy_1_writes_back_to_back(tmp_path):
    wb, store = _fed(tmp_path, 0.02, 1.0, 0.6)
    assert wb.status(0)["busy"] == 1.0
    assert wb.rest_s == 0.0
    assert len(store.starts) >= 10 and store.mark == wb.persisted


def test_the_final_drain_does_not_wait_out_a_rest(tmp_path):
    store = _SlowStore(0.5)   # a rest of 1.5 s after each write (0.25 busy), capped by retry_max_s = 5
    wb = _writebehind(tmp_path, store, 0.25)
    wb.start()
    assert wb.offer(_cs(1, ["a"], [1]))
    while not store.ends:
        time.sleep(0.01)
    assert wb.offer(_cs(2, ["b"], [1]))
    t0 = time.perf_counter()
    assert wb.drain(10.0)
    assert time.perf_counter() - t0 < 1.2   # the second write (0.5 s) ran at once, not after 1.5 s
    assert store.mark == 2
    assert not any(t.name == "pstate-sink" and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize("value", ["0", "-0.5", "1.5"])
def test_max_busy_outside_0_1_is_a_settings_error(value):
    with pytest.raises(SettingsError, match="max_busy"):
        load(None, [f"sink.max_busy={value}"])


class _RefusesSeq1(_SlowStore):
    """Every write of journal record 1 fails; later ones would succeed."""

    async def write(self, tabs, seq_hi, txn=""):
        if seq_hi == 1:
            raise OSError("disk full on the database host")
        await super().write(tabs, seq_hi, txn)


def test_a_write_that_never_committed_stops_everything_after_it(tmp_path):
    store = _RefusesSeq1(0.0)
    settings = load(None, [f"journal.data_dir={tmp_path}", "sink.batch_rows=1", "sink.retry_max_s=0.05"])
    wb = WriteBehind(settings, -1, "j", store=store)
    assert wb.offer(_cs(1, ["a"], [1])) and wb.offer(_cs(2, ["b"], [1]))   # two runs of one hand-off each
    wb.start()
    assert not wb.drain(0.5)    # record 1 never commits: the drain gives up and stops the thread
    assert not wb.thread.is_alive()
    # a later watermark would have skipped record 1's rows for good: nothing after it was written
    assert store.mark == -1 and not store.starts and wb.persisted == -1


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
@pytest.mark.parametrize("idle", [True, False])
def test_the_thread_runs_under_sched_idle_once_caught_up_unless_told_not_to(tmp_path, idle):
    """sink.sched_idle: once caught up, the write-behind thread, and the executor threads its loop
    starts from then on, run under SCHED_IDLE, so that they take a core only when the engine
    does not want it."""
    settings = load(None, [f"journal.data_dir={tmp_path}", f"sink.sched_idle={str(idle).lower()}"])
    wb = WriteBehind(settings, -1, "j", store=_SlowStore(0.0))
    before = {t.ident for t in threading.enumerate()}
    wb.start()
    try:
        deadline = time.time() + 10
        while wb.catching_up and time.time() < deadline:
            time.sleep(0.01)
        want = os.SCHED_IDLE if idle else os.SCHED_OTHER
        assert wb.sched == ("idle" if idle else "normal")
        assert os.sched_getscheduler(wb.thread.native_id) == want
        assert wb.offer(_cs(1, ["p0"], [1]))  # the loop's executor thread takes it: one is started now
        while wb.persisted < 1 and time.time() < deadline:
            time.sleep(0.01)
        assert wb.persisted == 1
        workers = [t for t in threading.enumerate() if t.ident not in before and t is not wb.thread]
        assert workers and all(os.sched_getscheduler(t.native_id) == want for t in workers)
        assert wb.status(1)["sched"] == wb.sched
    finally:
        assert wb.drain(10.0)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's own policy is untouched
