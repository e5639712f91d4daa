"""Ids that leave the engine as ints (ADR 0020): Names resolves them on the reading thread, and a
run of capture-built hand-offs becomes exactly the rows the same hand-offs give with their ids
resolved first (the eager path every other caller of ``tables`` takes)."""
import asyncio
import copy

import numpy as np
import pytest

from portfolio_state.daemon.capture import ChangeCapture
from portfolio_state.kernels import PositionStatus, TradeKind
from portfolio_state.persistence.changes import ID_CHUNK, CHANGE_TYPES, Names, change_codes, change_type, tables
from portfolio_state.persistence.duckstore import DuckDBStore
from tests.bookfactory import make_book, trade

SEED = 20261206


def test_names_take_gathers_by_chunks_and_follows_a_growing_list():
    ids = [f"id-{i}" for i in range(3 * ID_CHUNK + 5)]
    names = Names(ids, [], ())
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, len(ids), 5 * ID_CHUNK)
    assert names.take(ids, idx).tolist() == [ids[i] for i in idx]
    ids += [f"new-{i}" for i in range(2 * ID_CHUNK)]  # the list grows after a first mirror
    idx = np.array([len(ids) - 1, 0, len(ids) - ID_CHUNK])
    assert names.take(ids, idx).tolist() == [ids[i] for i in idx]
    assert names.take(ids, np.zeros(0, np.int64)).tolist() == []


def test_names_never_mirror_past_the_highest_index_asked_for():
    # Book.slot appends "" and sets the id just after: a reader must not keep that ""
    ids = ["a", "b", ""]
    names = Names(ids, [], ())
    assert names.take(ids, np.array([1, 0])).tolist() == ["b", "a"]
    ids[2] = "c"
    assert names.take(ids, np.array([2])).tolist() == ["c"]


def test_change_codes_match_change_type_row_by_row():
    old = np.array([0, 5, 5, 5, 5, -5, 5, 0])
    new = np.array([5, 0, 7, 3, -2, -9, 5, 0])
    want = ["OPEN", "CLOSE", "INCREASE", "DECREASE", "REVERSE", "INCREASE", "STATUS", "STATUS"]
    assert CHANGE_TYPES[change_codes(old, new)].tolist() == want
    assert [change_type(a, b) for a, b in zip(old.tolist(), new.tolist())] == want


def _hand_offs():
    """Hand-offs of a random workload over the test book: trades (opens, adds, reductions,
    reversals, closes), a status change, price moves, snapshots and revaluation passes."""
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    book = make_book(n_portfolios=3)
    cap = ChangeCapture(book, weight_epsilon=0.0)
    insts = ["AAPL", "MSFT", "XOM", "SAP", "7203", "ESZ6"]
    sets = []
    for step in range(12):
        for _ in range(40):
            pf = f"P{rng.integers(0, 3)}"
            pid = f"{pf}-pos-{rng.integers(0, 8)}"
            k = insts[rng.integers(0, len(insts))]
            p = book.portfolio_ids.get(pf)
            s = book.slot(p, pid, book.instrument_ids.get(k))
            if s < 0:
                continue  # this id holds another instrument
            kind = (TradeKind.BUY, TradeKind.SELL)[rng.integers(0, 2)] if pf != "P1" else TradeKind.BUY
            out, _ = trade(book, pf, pid, k, kind, int(rng.integers(1, 50)), float(rng.uniform(50, 500)), ts=step + 1)
            cap.note_trades(np.array([s]), np.array([out["reason"] == 0]))
        if step == 5:  # the first live slot suspended: a STATUS change
            s = int(np.flatnonzero(book.a.positions["status"][: len(book.slot_ids)] == PositionStatus.ACTIVE)[0])
            if book.set_status(np.array([book.a.positions["portfolio"][s]], np.int32), np.array([s], np.int32), np.array([PositionStatus.SUSPENDED], np.int8), np.array([99], np.int64))[0] == 0:
                cap.note_status(s)
        book.apply_prices(np.arange(6, dtype=np.int32), rng.uniform(50, 500, 6), np.full(6, step + 2, np.int64))
        cs = cap.take(step + 1, 1_000 + step, snapshot=(step % 2, 2), revalue=step % 3 == 0)
        if cs is not None:
            sets.append(cs)
    return sets


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for t in a:
        assert a[t].keys() == b[t].keys(), t
        for c in a[t]:
            x, y = a[t][c], b[t][c]
            x = x.tolist() if isinstance(x, np.ndarray) else list(x)
            y = y.tolist() if isinstance(y, np.ndarray) else list(y)
            assert x == y or (np.asarray(x, dtype=object) == np.asarray(y, dtype=object)).all() or \
                np.array_equal(np.asarray(x, float), np.asarray(y, float), equal_nan=True), (t, c)


def test_a_run_of_capture_hand_offs_gives_the_rows_their_resolved_copies_give():
    sets = _hand_offs()
    assert len(sets) > 5 and all(cs.positions is None or cs.positions.position_id is None for cs in sets)
    eager = [cs.resolve() for cs in copy.deepcopy(sets)]
    for run in (sets[:1], sets[:4], sets):  # one hand-off, and runs with a slot changed more than once
        lazy_rows = tables(copy.deepcopy(run))  # one deep copy: the run's hand-offs still share their Names
        eager_rows = tables(copy.deepcopy(eager[: len(run)]))
        _same(lazy_rows, eager_rows)
    rows = tables(sets)
    assert "_pf" not in rows["positions"] and "_pf" not in rows["exposures_ts"]
    pos = rows["positions"]
    assert len(set(pos["position_id"].tolist())) == len(pos["position_id"])  # one row per position
    assert all(isinstance(x, str) and x for x in pos["position_id"].tolist())
    assert set(rows["position_changes_ts"]["change_type"].tolist()) <= set(CHANGE_TYPES.tolist())
    assert {"INSTRUMENT", "SECTOR"} <= set(rows["exposures_ts"]["exposure_type"].tolist())
    assert "SUSPENDED" in pos["status"].tolist() and "STATUS" in rows["position_changes_ts"]["change_type"].tolist()


def test_a_run_mixing_resolved_and_int_ids_resolves_all_of_it():
    sets = _hand_offs()
    mixed = copy.deepcopy(sets)
    mixed[0].resolve()
    _same(tables(mixed), tables([cs.resolve() for cs in copy.deepcopy(sets)]))


def test_compiled_capture_rows_follow_the_numpy_formulas():
    """position_rows_nb and instrument_rows_nb against ChangeCapture's NumPy formulas (_cost_base,
    _pct): three currencies, portfolios in two base currencies, limit overrides."""
    rng = np.random.default_rng(SEED)
    book = make_book(n_portfolios=3)
    book.set_limit("P0", "INSTRUMENT", "AAPL", 0.05)
    book.set_limit("P2", "INSTRUMENT", "XOM", 0.2)
    insts = ["AAPL", "MSFT", "XOM", "SAP", "7203", "ESZ6"]
    for j in range(60):
        pf, k = f"P{j % 3}", insts[j % len(insts)]
        trade(book, pf, f"{pf}-{k}-{j % 4}", k, TradeKind.BUY, int(rng.integers(1, 30)), float(rng.uniform(10, 300)))
    cap = ChangeCapture(book)
    n = len(book.slot_ids)
    slots = np.arange(n, dtype=np.int64)
    P = book.a.positions
    want_cost, want_w = cap._cost_base(slots), cap._pct(slots, P["mv"][slots])
    before_qty = cap.last_qty[:n].copy()
    got = cap._positions(slots, np.ones(n, np.bool_))
    assert got.cost.tolist() == want_cost.tolist() and np.array_equal(got.weight, want_w)
    assert got.qty.tolist() == P["qty"][:n].tolist() and got.mv.tolist() == P["mv"][:n].tolist()
    assert got.old_qty.tolist() == before_qty.tolist() and cap.last_qty[:n].tolist() == P["qty"][:n].tolist()
    assert cap.last_cost[:n].tolist() == want_cost.tolist()
    converted = P["cost"][:n] != got.cost  # held in another currency than the portfolio's base
    assert converted.sum() >= 4 and (~converted & (got.cost != 0)).sum() >= 4
    heads = np.flatnonzero(P["head"][:n] == np.arange(n))
    e = cap.instrument_exposures(heads)
    assert np.array_equal(e.pct, cap._pct(heads, P["inst_exp"][heads])) and e.value.tolist() == P["inst_exp"][heads].tolist()
    e.resolve()
    limits = {(p, c): lim for p, c, lim in zip(e.portfolio_id, e.category, e.limit.tolist())}
    assert limits[("P0", "AAPL")] == 0.05 and limits[("P2", "XOM")] == 0.2
    for lim, pct, u in zip(e.limit.tolist(), e.pct.tolist(), e.util.tolist()):
        assert (u == abs(pct) / lim) if lim > 0 else np.isnan(u)
    assert cap.last_ie_pct[heads].tolist() == e.pct.tolist()


def _dump(store) -> dict:
    async def go():
        out = {}
        for t in ("positions", "position_changes_ts", "exposures_ts", "portfolio_state_ts", "cash_balances"):
            rows = await store.read(t)
            out[t] = sorted(tuple(str(v) for k, v in r.items() if k not in ("id", "created_at", "updated_at")) for r in rows)
        return out
    return asyncio.run(go())


def test_duckdb_joins_int_ids_to_the_same_rows_the_ids_give(tmp_path):
    """DuckDB's int-id path (ids copied once into per-connection tables, joined in SQL) against
    the same hand-offs written with their ids resolved; then a reconnect (the id tables start
    over), a failed write (what it copied is not taken as held) and a run of another book."""
    sets = _hand_offs()
    a = DuckDBStore(str(tmp_path / "ints.duckdb"), "j")
    b = DuckDBStore(str(tmp_path / "ids.duckdb"), "j")

    async def write(store, runs, int_ids, seq0):
        await store.open()
        for j, run in enumerate(runs):
            await store.write(tables(copy.deepcopy(run), int_ids=int_ids), seq0 + j)
    runs = [sets[:3], sets[3:4], sets[4:]]
    asyncio.run(write(a, runs[:2], True, 1))
    assert a._sent  # the ids went by int
    asyncio.run(a.close())
    asyncio.run(write(a, runs[2:], True, 3))  # a new connection: its id tables start empty
    asyncio.run(write(b, [[cs.resolve() for cs in copy.deepcopy(r)] for r in runs], False, 1))
    want = _dump(b)
    assert all(want[t] for t in ("positions", "position_changes_ts", "exposures_ts"))
    assert _dump(a) == want
    # the id tables hold the ids written, once each (a duplicate would duplicate joined rows)
    n_ids, n_distinct = a.con.execute("SELECT count(*), count(DISTINCT i) FROM _id_slot").fetchone()
    assert n_ids == n_distinct == len(np.unique(np.concatenate([cs.positions.slot for cs in runs[2]
                                                                 if cs.positions is not None])))
    # a write that fails after copying ids leaves what the tables hold as it was
    held = {k: (ids, mask.copy()) for k, (ids, mask) in a._sent.items()}
    tabs = tables(copy.deepcopy(sets[-1:]), int_ids=True)
    tabs["positions"]["quantity"] = tabs["positions"]["quantity"][:-1]  # unequal columns: DuckDB refuses
    with pytest.raises(Exception):
        asyncio.run(a.write(tabs, 99))
    assert a._sent.keys() == held.keys()
    assert all(a._sent[k][0] is ids and np.array_equal(a._sent[k][1], mask) for k, (ids, mask) in held.items())
    # another book's hand-offs (a catch-up's scratch book): its lists replace the first book's
    other = _hand_offs()
    asyncio.run(a.write(tables(other[:2], int_ids=True), 100))
    assert a._sent["slot"][0] is other[0].positions.names.slots
    n_ids, n_distinct = a.con.execute("SELECT count(*), count(DISTINCT i) FROM _id_slot").fetchone()
    assert n_ids == n_distinct == len(np.unique(np.concatenate([cs.positions.slot for cs in other[:2]
                                                                 if cs.positions is not None])))
    asyncio.run(a.close())
    asyncio.run(b.close())
