"""PostgresStore writes the keyed and the appended tables on two connections (ADR 0019).

Against a real PostgreSQL: a crash between the two commits (the keyed group's committed,
the appended group's not) is resumed from ``sink_watermark`` with the keyed rows written
again and the appended rows exactly once; a failure in either group rolls both back.
"""
from __future__ import annotations

import asyncio

import pytest

from portfolio_state.persistence.changes import tables
from portfolio_state.persistence.pgstore import PostgresStore
from tests.bookfactory import hand_off
from tests.integration.servers import psql


def _hand_off(seq: int, rows: dict[str, int]) -> dict:
    return tables([hand_off(seq, rows, slots=range(len(rows)), weight=0.5, old_qty=[q - 1 for q in rows.values()])])


class _Crash(RuntimeError):
    pass


class _CrashingCommit:
    """The appended group's transaction: its commit never happens (the daemon died first)."""

    def __init__(self, tr):
        self.tr = tr

    async def start(self):
        await self.tr.start()

    async def commit(self):
        await self.tr.rollback()
        raise _Crash("killed between the two commits")

    async def rollback(self):
        await self.tr.rollback()


class _Conn:
    def __init__(self, conn):
        self.conn = conn

    def transaction(self):
        return _CrashingCommit(self.conn.transaction())

    def __getattr__(self, name):
        return getattr(self.conn, name)


def _positions(dsn: str) -> dict:
    return {r[0]: float(r[1]) for r in psql(dsn, "SELECT position_id, quantity FROM positions")}


def test_a_crash_between_the_commits_resumes_with_the_appended_rows_exactly_once(pg_dsn):
    def positions(rows):
        return {r["position_id"]: float(r["quantity"]) for r in rows}

    async def go():
        store = PostgresStore(pg_dsn, "two-groups")
        assert await store.open() == -1
        await store.write(_hand_off(1, {"a": 1, "b": 1}), 1, "t1")
        await store.write(_hand_off(2, {"a": 2}), 2, "t2")
        real = store.conn
        store.conn = _Conn(real)
        with pytest.raises(_Crash):   # one write covering records 3 and 4
            await store.write(_hand_off(4, {"a": 4}), 4, "t4")
        store.conn = real
        await store.close()
        # the restart: a new store resumes after sink_watermark (2); the catch-up replays records
        # 3 and 4 in hand-offs of its own
        store = PostgresStore(pg_dsn, "two-groups")
        marks = await store.open(), await store.state_watermark(), await store.last_txn()
        mid = positions(await store.read("positions")), await store.conn.fetchval(
            "SELECT count(*) FROM position_changes_ts")
        await store.write(_hand_off(3, {"a": 3}), 3, "r3")
        replayed = positions(await store.read("positions")), await store.state_watermark()
        await store.write(_hand_off(4, {"a": 4}), 4, "r4")
        after = await store.watermark(), await store.state_watermark()
        await store.close()
        return marks, mid, replayed, after

    (wm, state_wm, last), (mid_pos, mid_changes), replayed, after = asyncio.run(go())
    assert (wm, state_wm, last) == (2, 4, "t2")       # keyed tables ahead; the resume point is 2
    assert mid_pos == {"a": 4.0, "b": 1.0} and mid_changes == 3
    assert replayed == ({"a": 4.0, "b": 1.0}, 4)     # a write they already cover leaves them alone
    assert after == (4, 4)
    assert _positions(pg_dsn) == {"a": 4.0, "b": 1.0}
    changes = psql(pg_dsn, "SELECT position_id, quantity FROM position_changes_ts ORDER BY quantity, position_id")
    assert changes == [("a", 1.0), ("b", 1.0), ("a", 2.0), ("a", 3.0), ("a", 4.0)]   # exactly once each


def test_a_failure_in_either_group_rolls_both_back(pg_dsn):
    async def go():
        store = PostgresStore(pg_dsn, "two-groups")
        await store.open()
        await store.write(_hand_off(1, {"a": 1}), 1, "t1")
        bad = _hand_off(2, {"a": 5, "x" * 101: 1})        # position_id is VARCHAR(100): the keyed group fails
        with pytest.raises(Exception, match="too long"):
            await store.write(bad, 2, "t2")
        out = await store.watermark(), await store.state_watermark()
        await store.write(_hand_off(3, {"a": 3}), 3, "t3")  # both connections are usable afterwards
        out += (await store.watermark(),)
        await store.close()
        return out

    wm, state_wm, wm_after = asyncio.run(go())
    assert (wm, state_wm, wm_after) == (1, 1, 3)
    assert _positions(pg_dsn) == {"a": 3.0}
    assert psql(pg_dsn, "SELECT count(*) FROM position_changes_ts")[0][0] == 2   # hand-offs 1 and 3, not 2


def test_a_hand_off_with_no_new_record_still_writes_the_keyed_tables(pg_dsn):
    # a snapshot, or the exact pass at shutdown, covers the same journal sequence as the write
    # before it and carries rows that one did not: they must land
    async def go():
        store = PostgresStore(pg_dsn, "two-groups")
        await store.open()
        await store.write(_hand_off(5, {"a": 1}), 5, "t1")
        await store.write(_hand_off(5, {"a": 1, "b": 7}), 5, "t2")
        await store.close()

    asyncio.run(go())
    assert _positions(pg_dsn) == {"a": 1.0, "b": 7.0}
