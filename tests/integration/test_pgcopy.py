"""The binary COPY encoder (persistence/pgcopy.py) against a real PostgreSQL: every value it
encodes comes back equal, NULLs included, the staged-and-converted write path turns int64
cents, micro-units and nanoseconds into exactly the numeric and timestamp values they stand for,
and a timestamp sent straight (the appended time-series tables) equals the staged one."""
import asyncio
import datetime as dt
import io
import math
from decimal import Decimal

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portfolio_state.persistence import pgcopy
from portfolio_state.persistence.pgstore import _convert

i64 = st.integers(-(1 << 63), (1 << 63) - 1)
f64 = st.floats(allow_infinity=True, allow_nan=True)
# PostgreSQL text is UTF-8 without NUL: no NUL (the daemon refuses ids with control characters) and no
# lone surrogates (not UTF-8; the daemon's decoders refuse them: msgpack needs valid UTF-8, and
# msgspec's JSON decoder rejects a lone \ud800 escape)
text = st.one_of(st.none(), st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                                    max_size=40))


async def _roundtrip(dsn: str, rows: list[tuple]) -> list[tuple]:
    import asyncpg

    c = await asyncpg.connect(dsn)
    try:
        await c.execute("CREATE TEMP TABLE t (a BIGINT, b FLOAT8, s TEXT, u TEXT)")
        cols = list(zip(*rows)) if rows else [(), (), (), ()]
        data = pgcopy.encode([(pgcopy.INT8, np.array(cols[0], np.int64)), (pgcopy.FLOAT8, np.array(cols[1], np.float64)),
                              (pgcopy.TEXT, list(cols[2])), (pgcopy.TEXT, np.array(cols[3], dtype=object))])
        await c.copy_to_table("t", source=io.BytesIO(data), columns=["a", "b", "s", "u"], format="binary")
        return [tuple(r) for r in await c.fetch("SELECT a, b, s, u FROM t")]
    finally:
        await c.close()


def test_every_kind_round_trips_nulls_and_non_ascii_included(pg_dsn):
    rows = [(0, 0.0, "", "x"), (-(1 << 63), float("nan"), None, "é€😀"), ((1 << 63) - 1, -1.5e300, "P0001", None),
            (123456789, float("inf"), "a\tb\nc\\d", "ascii")]
    got = asyncio.run(_roundtrip(pg_dsn, rows))
    assert len(got) == len(rows)
    for g, w in zip(got, rows):
        assert g[0] == w[0] and g[2:] == w[2:]
        assert (g[1] is None) if math.isnan(w[1]) else g[1] == w[1]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(i64, f64, text, text), max_size=60))
def test_random_rows_round_trip(pg_dsn, rows):
    got = asyncio.run(_roundtrip(pg_dsn, rows))
    assert len(got) == len(rows)
    for g, w in zip(got, rows):
        assert g[0] == w[0] and g[2:] == w[2:]
        assert (g[1] is None) if math.isnan(w[1]) else g[1] == w[1]


def test_staged_conversions_are_exact(pg_dsn):
    import asyncpg

    async def go():
        c = await asyncpg.connect(pg_dsn)
        try:
            await c.execute("CREATE TEMP TABLE s (cents BIGINT, micro BIGINT, ts BIGINT)")
            cents = np.array([0, 1, -1, 12345, 9_999_999_999_999, -9_999_999_999_999], np.int64)
            micro = np.array([0, 1, -1, 1_500_000, 999_999_999_999_999, -3], np.int64)
            ts = np.array([0, 1_795_000_000_123_456_789, 1, 86_400_000_000_000, 999, 1_700_000_000_000_000_000], np.int64)
            data = pgcopy.encode([(pgcopy.INT8, cents), (pgcopy.INT8, micro), (pgcopy.INT8, ts)])
            await c.copy_to_table("s", source=io.BytesIO(data), columns=["cents", "micro", "ts"], format="binary")
            rows = await c.fetch(f"SELECT {_convert('cents', 'cents')}, {_convert('micro', 'micro')}, "
                                 f"{_convert('ts', 'ts')} FROM s")
        finally:
            await c.close()
        for r, cc, mm, tt in zip(rows, cents.tolist(), micro.tolist(), ts.tolist()):
            assert r[0] == Decimal(cc).scaleb(-2)
            assert r[1] == Decimal(mm).scaleb(-6)
            want = None if tt == 0 else dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=tt // 1000)
            assert r[2] == want

    asyncio.run(go())


def test_direct_timestamps_equal_the_staged_conversion(pg_dsn):
    """A TIMESTAMP column (straight into a TIMESTAMP column, as the appended time-series tables
    are written) holds exactly what the staged BIGINT and its SQL conversion give: whole
    microseconds cut toward zero, before 1970 and after 2000 alike, and 0 as NULL."""
    import asyncpg

    ts = np.array([0, 1, 999, 1_000, -1, -999, -1_000, -1_500, 1_795_000_000_123_456_789, 946_684_800_000_000_000,
                   946_684_799_999_999_999, -2_208_988_800_000_000_001, 86_400_000_000_000,
                   1_700_000_000_000_000_000], np.int64)

    async def go():
        c = await asyncpg.connect(pg_dsn)
        try:
            await c.execute("CREATE TEMP TABLE d (i TEXT, t TIMESTAMP)")
            await c.execute("CREATE TEMP TABLE s (i TEXT, t BIGINT)")
            idx = np.arange(len(ts))
            for table, kind in (("d", pgcopy.TIMESTAMP), ("s", pgcopy.INT8)):
                data = pgcopy.encode([(pgcopy.TEXT, [str(i) for i in idx]), (kind, ts)])
                await c.copy_to_table(table, source=io.BytesIO(data), columns=["i", "t"], format="binary")
            direct = await c.fetch("SELECT i::int, t FROM d ORDER BY i::int")
            staged = await c.fetch(f"SELECT i::int, {_convert('t', 'ts')} FROM s ORDER BY i::int")
        finally:
            await c.close()
        assert [tuple(r) for r in direct] == [tuple(r) for r in staged]
        assert direct[0][1] is None and all(r[1] is not None for r in direct[1:])
        for r, t in zip(direct, ts.tolist()):
            if t:
                us = abs(t) // 1000 * (1 if t >= 0 else -1)
                assert r[1] == dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=us)

    asyncio.run(go())


def test_upserts_by_merge_and_by_on_conflict_leave_the_same_rows(pg_dsn):
    """PostgreSQL 15+ upserts by MERGE; older servers by INSERT .. ON CONFLICT: both ways, new keys
    are inserted and known keys updated to exactly the staged values."""
    from perf.bench_sink import synthetic
    from portfolio_state.persistence.changes import tables
    from portfolio_state.persistence.pgstore import PostgresStore

    async def go():
        out = {}
        for merge in (True, False):
            s = PostgresStore(pg_dsn, f"upsert-{merge}")
            await s.open()
            await s.conn.execute("TRUNCATE positions")
            s.merge = merge
            rng = np.random.default_rng(5)
            await s.write(tables([synthetic(0, 1, rng, np.arange(50))]), 1)  # all new: inserts
            again = synthetic(0, 2, rng, np.arange(30, 60))  # 30..49 known: updates; 50..59 new
            await s.write(tables([again]), 2)
            rows = await s.conn.fetch("SELECT position_id, portfolio_id, instrument_id, quantity, market_value, "
                                      "status FROM positions ORDER BY position_id")
            out[merge] = [tuple(r) for r in rows]
            want = dict(zip(again.positions.position_id.tolist(), again.positions.qty.tolist()))
            got = {r[0]: r[3] for r in out[merge]}
            assert len(got) == 60 and all(got[k] == Decimal(q).scaleb(-6) for k, q in want.items())
            await s.close()
        assert out[True] == out[False]

    asyncio.run(go())
