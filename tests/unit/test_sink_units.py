"""The write-behind's pure parts: change capture, table rows, DDL of both time-series forms, retention."""
import datetime as dt

import numpy as np

from portfolio_state.daemon.capture import ChangeCapture
from portfolio_state.kernels import TradeKind
from portfolio_state.persistence import checkpoint as ckpt
from portfolio_state.persistence import pg_schema
from portfolio_state.persistence.changes import tables
from tests.bookfactory import make_book, trade


def _capture(book):
    cap = ChangeCapture(book, redis_positions_per_flush=8)
    return cap


def test_capture_coalesces_and_old_values_are_the_last_handed_off():
    book = make_book()
    cap = _capture(book)
    out, _ = trade(book, "P0", "a", "AAPL", TradeKind.BUY, 10, 190.0)
    cap.note_trades(np.array([book.slot(0, "a", 0)]), np.array([True]))
    cs = cap.take(1, 1_000, snapshot=True)
    t = tables([cs])["position_changes_ts"]
    assert list(t["quantity_change"]) == [10.0] and t["change_type"] == ["OPEN"]
    # two more trades while the thread is busy (no take): one row, net change, old value = last handed off
    for q in (5, 7):
        trade(book, "P0", "a", "AAPL", TradeKind.BUY, q, 190.0)
        cap.note_trades(np.array([book.slot(0, "a", 0)]), np.array([True]))
    cs = cap.take(3, 2_000)
    t = tables([cs])["position_changes_ts"]
    assert list(t["quantity_change"]) == [12.0] and list(t["quantity"]) == [22.0] and t["change_type"] == ["INCREASE"]
    assert cap.take(3, 3_000) is None  # nothing changed: no hand-off


def test_snapshot_rows_carry_state_margin_exposures_and_cash_of_changed_portfolios_only():
    book = make_book()
    cap = _capture(book)
    cap.take(0, 1, snapshot=True)  # the initial state handed off
    trade(book, "P2", "s", "SAP", TradeKind.BUY, 100, 120.0)
    cap.note_trades(np.array([book.slot(2, "s", 3)]), np.array([True]))
    cs = cap.take(1, 10, snapshot=True)
    assert list(cs.states.portfolio_id) == ["P2"]
    tabs = tables([cs])
    assert set(tabs) >= {"positions", "position_changes_ts", "portfolio_state_ts", "margin_requirements",
                         "exposures_ts", "cash_balances"}
    assert {(t, c) for t, c in zip(tabs["exposures_ts"]["exposure_type"], tabs["exposures_ts"]["category"])} >= {
        ("INSTRUMENT", "SAP"), ("SECTOR", "Technology"), ("CURRENCY", "EUR")}
    assert "P2" in cs.redis_positions and list(cs.redis_positions["P2"].position_id) == ["s"]


def _instrument_rows(cs) -> set:
    e = cs.exposures if cs is not None else None
    if e is None:
        return set()
    e.resolve()  # the capture leaves ids as ints for the write-behind thread
    return {(p, c) for p, t, c in zip(e.portfolio_id, e.exposure_type, e.category) if t == "INSTRUMENT"}


def test_instrument_exposure_rows_follow_trades_and_drift_beyond_epsilon_only():
    book = make_book()
    trade(book, "P0", "a", "AAPL", TradeKind.BUY, 100, 190.0)
    trade(book, "P0", "x", "XOM", TradeKind.BUY, 100, 110.0)
    cap = ChangeCapture(book, weight_epsilon=1e-3)
    assert _instrument_rows(cap.take(0, 1, snapshot=True)) == set()  # nothing changed since mark_persisted
    trade(book, "P0", "a", "AAPL", TradeKind.BUY, 5, 190.0)
    cap.note_trades(np.array([book.slot(0, "a", 0)]), np.array([True]))
    cs = cap.take(1, 2, snapshot=True)
    assert _instrument_rows(cs) == {("P0", "AAPL")}  # the traded head only; XOM did not change
    assert {t for t in cs.exposures.exposure_type} >= {"SECTOR", "CURRENCY"}  # aggregates of P0 as well
    # a price move too small to shift AAPL's share of P0 by 0.1%: no row; a large one: a row
    book.apply_prices(np.array([0], np.int32), np.array([190.01]), np.array([100], np.int64))
    assert _instrument_rows(cap.take(2, 3, revalue=True)) == set()
    book.apply_prices(np.array([0], np.int32), np.array([250.0]), np.array([200], np.int64))
    cs = cap.take(3, 4, revalue=True)
    assert ("P0", "AAPL") in _instrument_rows(cs)
    # closing a position writes its zero row (the time series shows it went)
    trade(book, "P0", "x", "XOM", TradeKind.SELL, 100, 110.0)
    cap.note_trades(np.array([book.slot(0, "x", 2)]), np.array([True]))
    e = cap.take(5, 5, snapshot=True).exposures.resolve()
    rows = [(c, v) for t, c, v in zip(e.exposure_type, e.category, e.value.tolist()) if t == "INSTRUMENT"]
    assert rows == [("XOM", 0)]


def test_redis_whole_lists_go_round_robin_with_whole_exposure_maps():
    book = make_book()
    for pid in ("P0", "P1"):
        trade(book, pid, "a", "AAPL", TradeKind.BUY, 10, 190.0)
        trade(book, pid, "x", "XOM", TradeKind.BUY, 10, 110.0)
    cap = ChangeCapture(book, redis_positions_per_flush=1)
    cap.redis_dirty[:] = False
    cap.take(0, 1, snapshot=True)
    for pid in ("P0", "P1"):
        trade(book, pid, "a", "AAPL", TradeKind.BUY, 1, 190.0)
    seen = []
    for k in range(2):
        cs = cap.take(1 + k, 2 + k, snapshot=True)
        assert len(cs.redis_positions) == 1
        pid = next(iter(cs.redis_positions))
        seen.append(pid)
        assert sorted(cs.redis_positions[pid].position_id) == ["a", "x"]
        e = cs.redis_exposures.resolve()
        inst = {c for p, t, c in zip(e.portfolio_id, e.exposure_type, e.category) if t == "INSTRUMENT" and p == pid}
        assert inst == {"AAPL", "XOM"}  # the whole map, not just what changed
    assert sorted(seen) == ["P0", "P1"]
    assert cap.take(3, 4, snapshot=True) is None or not cap.take(3, 4, snapshot=True).redis_positions


def test_tables_keep_the_last_row_per_key_for_upserts():
    book = make_book()
    cap = _capture(book)
    s = book.slot(0, "a", 0)
    sets = []
    for q in (1, 2):
        trade(book, "P0", "a", "AAPL", TradeKind.BUY, q, 190.0)
        cap.note_trades(np.array([s]), np.array([True]))
        sets.append(cap.take(q, q * 10))
    tabs = tables(sets)
    assert list(tabs["positions"]["position_id"]) == ["a"] and int(tabs["positions"]["quantity"][0]) == 3_000_000
    assert len(tabs["position_changes_ts"]["position_id"]) == 2  # appended: one row per hand-off


def test_full_capture_holds_every_position_portfolio_and_reference_row():
    book = make_book()
    for i, inst in enumerate(("AAPL", "XOM")):
        trade(book, "P0", f"x{i}", inst, TradeKind.BUY, 3, 100.0)
    book.set_limit("P0", "SECTOR", "Energy", 0.2)
    cs = ChangeCapture(book).take(5, 1, full=True)
    tabs = tables([cs])
    assert sorted(tabs["positions"]["position_id"]) == ["x0", "x1"]
    assert sorted(tabs["portfolios"]["portfolio_id"]) == ["P0", "P1", "P2"]
    assert len(tabs["instruments"]["instrument_id"]) == 6
    assert ("P0", "SECTOR", "Energy") in set(zip(*(tabs["exposure_limits"][k] for k in ("portfolio_id", "exposure_type", "category"))))


def test_timescale_ddl_makes_hypertables_with_the_spec_chunks_and_space_partitions():
    sql = "\n".join(pg_schema.query_side(timescale=True))
    assert "CREATE EXTENSION IF NOT EXISTS timescaledb" in sql
    assert ("create_hypertable('portfolio_state_ts', 'timestamp', chunk_time_interval => INTERVAL '1 day', "
            "partitioning_column => 'portfolio_id', number_partitions => 8)") in sql
    assert "create_hypertable('position_changes_ts', 'timestamp', chunk_time_interval => INTERVAL '1 day')" in sql
    assert "create_hypertable('exposures_ts', 'timestamp', chunk_time_interval => INTERVAL '1 hour')" in sql
    assert "PARTITION BY" not in sql


def test_native_partition_ddl_per_interval():
    t = dt.datetime(2026, 11, 24, 13, 45)
    day = pg_schema.partition_ddl("position_changes_ts", t, set())
    assert day == ["CREATE TABLE IF NOT EXISTS position_changes_ts_20261124 PARTITION OF position_changes_ts "
                   "FOR VALUES FROM ('2026-11-24 00:00:00') TO ('2026-11-25 00:00:00')"]
    hour = pg_schema.partition_ddl("exposures_ts", t, set())
    assert "FROM ('2026-11-24 13:00:00') TO ('2026-11-24 14:00:00')" in hour[0]
    state = pg_schema.partition_ddl("portfolio_state_ts", t, set())
    assert len(state) == 9 and "PARTITION BY HASH (portfolio_id)" in state[0]
    assert pg_schema.partition_ddl("position_changes_ts", t, {"position_changes_ts_20261124"}) == []


def test_retention_keeps_the_newest_checkpoint_at_or_before_the_watermark(tmp_path):
    for seq in (10, 20, 30, 40):
        ckpt.write_checkpoint(str(tmp_path), seq, {"x": np.zeros(1)}, b"")
    assert ckpt.retire_checkpoints(str(tmp_path), 2, floor=25) == [20, 30, 40]
    assert [s for s, _ in ckpt.list_checkpoints(str(tmp_path))] == [20, 30, 40]
    assert ckpt.retire_checkpoints(str(tmp_path), 2, floor=45) == [30, 40]
    assert ckpt.retire_checkpoints(str(tmp_path), 1, floor=None) == [40]


def test_aggregate_exposure_rows_are_written_when_they_move_and_all_at_a_heartbeat():
    book = make_book()
    cap = ChangeCapture(book, weight_epsilon=1e-3)
    trade(book, "P0", "a", "AAPL", TradeKind.BUY, 100, 190.0)
    trade(book, "P0", "x", "XOM", TradeKind.BUY, 100, 110.0)
    cs = cap.take(0, 1, snapshot=True)  # first rows of P0: every non-zero category

    def rows(cs):
        e = cs.exposures.resolve() if cs is not None and cs.exposures is not None else None
        return set() if e is None else {(t, c) for p, t, c in zip(e.portfolio_id, e.exposure_type, e.category)
                                        if t != "INSTRUMENT" and p == "P0"}

    first = rows(cs)
    assert {("SECTOR", "Technology"), ("SECTOR", "Energy"), ("CURRENCY", "USD")} <= first
    # a sliver more AAPL: values change, percentages by far less than 0.1%: no aggregate rows
    trade(book, "P0", "a", "AAPL", TradeKind.BUY, 0.01, 190.0)
    cap.note_trades(np.array([book.slot(0, "a", 0)]), np.array([True]))
    assert rows(cap.take(1, 2, snapshot=True)) == set()
    # a large purchase paid in cash: Energy, US and EQUITY move; Technology (AAPL's value) and USD
    # (cash + USD holdings) did not change at all: no rows for them
    trade(book, "P0", "x", "XOM", TradeKind.BUY, 2000, 110.0)
    cap.note_trades(np.array([book.slot(0, "x", 2)]), np.array([True]))
    moved = rows(cap.take(2, 3, snapshot=True))
    assert moved == {("SECTOR", "Energy"), ("GEOGRAPHIC", "US"), ("ASSET_CLASS", "EQUITY")}
    # a heartbeat writes every non-zero category again, changed or not
    cap.heartbeat()
    whole = cap.aggregate_exposures(np.array([0]), record=False).resolve()
    assert rows(cap.take(3, 4, snapshot=True)) == set(zip(whole.exposure_type, whole.category)) >= first
