"""The capture's compiled pieces against the NumPy formulas they replaced, row for row.

``aggregate_rows_nb``, ``revalue_scan_nb``, ``state_rows_nb`` and ``cash_rows_nb`` took over
NumPy chains that ran on the engine thread at every write-behind tick. The reference functions
below are those chains, kept as they were. Two captures follow one book through random trades,
price and FX ticks, cash flows, limits and heartbeats: one the daemon's, one whose state the
references advance. Every take must give the same rows, in the same order, and leave the same
"last written" state behind.
"""
import numpy as np
import pytest

from portfolio_state.daemon.capture import ChangeCapture
from portfolio_state.kernels import CashFlowType, PositionStatus, TradeKind
from portfolio_state.kernels.enums import PF_LONG_ONLY
from tests.bookfactory import I8, I32, I64, make_book, trade

SEED = 20261207
INSTS = ["AAPL", "MSFT", "XOM", "SAP", "7203", "ESZ6"]
AGGREGATES = (("SECTOR", "exp_sector"), ("GEOGRAPHIC", "exp_country"), ("CURRENCY", "exp_currency"),
              ("ASSET_CLASS", "exp_asset"))


# ------------------------------------------------------------------ the NumPy formulas, as they were
def ref_aggregate(cap: ChangeCapture, ps, record: bool):
    book, a = cap.book, cap.book.a
    totals = cap._totals(ps).astype(np.float64)
    force = cap.exp_force[ps] if record else None
    out = []
    for etype, (t, field) in enumerate(AGGREGATES, 1):
        _, lims = book._exposure_axis(t)
        vals = getattr(a, field)[ps]
        with np.errstate(invalid="ignore", divide="ignore"):
            pct = np.where(totals[:, None] != 0, vals / np.where(totals == 0, 1, totals)[:, None], 0.0)
        if record:
            last_v, last_p = cap._last_agg(t, vals.shape[1])
            lv, lp = last_v[ps, : vals.shape[1]], last_p[ps, : vals.shape[1]]
            emit = (vals != lv) & ((np.abs(pct - lp) > cap.eps) | (vals == 0) | (lv == 0))
            emit |= force[:, None] & (vals != 0)
            r, c = np.nonzero(emit)
            last_v[ps[r], c], last_p[ps[r], c] = vals[r, c], pct[r, c]
        else:
            r, c = np.nonzero(vals)
        limit = lims[ps[r], c].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            util = np.where(limit > 0, np.abs(pct[r, c]) / limit, np.nan)
        out.append(np.rec.fromarrays([ps[r], np.full(len(r), etype), c, vals[r, c], pct[r, c], limit, util]))
    if record:
        cap.exp_force[ps] = False
    return np.concatenate(out) if out else out


def ref_revalued(cap: ChangeCapture, n: int):
    lo = cap.reval_cursor if cap.reval_cursor < n else 0
    hi = min(n, lo + cap.reval_rows)
    cap.reval_cursor = hi if hi < n else 0
    pos = cap.book.a.positions[lo:hi]
    mv, status = pos["mv"], pos["status"]
    w = cap._weights(pos)
    idx = np.arange(lo, hi)
    differs = ((mv != cap.last_mv[lo:hi]) | (pos["qty"] != cap.last_qty[lo:hi])
               | (status != cap.last_status[lo:hi]) | (np.abs(w - cap.last_w[lo:hi]) > cap.eps))
    differs &= status != PositionStatus.FREE
    ie, last = pos["inst_exp"], cap.last_ie[lo:hi]
    head = (pos["head"] == idx) & (ie != last)
    cand = idx[head]
    drift = (np.abs(cap._pct(cand, ie[head]) - cap.last_ie_pct[cand]) > cap.eps) | (ie[head] == 0) | (last[head] == 0)
    return idx[differs], cand[drift]


def ref_states(cap: ChangeCapture, ps):
    rows = cap.book.a.portfolios[ps]
    cash = rows["cash_base"]
    invested = rows["long_mv"] + rows["short_mv"]
    gross = rows["long_mv"] - rows["short_mv"]
    total = cash + invested
    im, mm = rows["init_margin"], rows["maint_margin"]
    avail = np.maximum(0, total - im)
    avail_cash = np.maximum(0, np.minimum(cash, total - im))
    with np.errstate(invalid="ignore", divide="ignore"):
        lev = np.where(gross == 0, 0.0, np.where(total <= 0, np.inf, gross / np.where(total == 0, 1, total)))
    bp = np.where((rows["flags"] & PF_LONG_ONLY) != 0, avail_cash, avail * 2)
    return [total, cash, invested, avail_cash, im, avail, lev, rows["position_count"], im, mm, total - mm, bp,
            rows["updated_ns"]]


def ref_cash(cap: ChangeCapture, ps):
    book = cap.book
    c = book.a.cash[ps][:, : len(book.currency_ids)]
    C = c.shape[1]
    held = (c != 0) | (book.a.exp_currency[ps][:, :C] != 0) | cap.ccy_seen[ps, :C]
    cap.ccy_seen[ps, :C] |= c != 0
    r, k = np.nonzero(held)
    return [(book.portfolio_ids.ids[p], book.currency_ids.ids[x], int(v))
            for p, x, v in zip(ps[r].tolist(), k.tolist(), c[r, k].tolist())]


# ------------------------------------------------------------------ the comparison
def _rows(e):
    assert (e.pf.dtype, e.etype.dtype, e.cat.dtype, e.value.dtype) == (np.int64, np.int8, np.int64, np.int64)
    assert e.pct.dtype == e.limit.dtype == e.util.dtype == np.float64
    return np.rec.fromarrays([e.pf, e.etype.astype(np.int64), e.cat, e.value, e.pct, e.limit, e.util])


def _same(got, want):
    assert len(got) == len(want)
    for name in got.dtype.names:
        np.testing.assert_array_equal(got[name], want[name].astype(got[name].dtype), err_msg=name)


def _random_step(book, rng, step):
    """A burst of trades on three portfolios, sometimes a price or FX tick, a cash flow, a limit."""
    for _ in range(25):
        pf = f"P{rng.integers(0, 6)}"
        k = INSTS[rng.integers(0, len(INSTS))]
        kind = TradeKind.BUY if rng.random() < 0.6 else TradeKind.SELL
        trade(book, pf, f"{pf}-{k}-{rng.integers(0, 3)}", k, kind, int(rng.integers(1, 40)),
              float(rng.uniform(50, 500)), ts=100 + step)
    if rng.random() < 0.5:
        n = len(book.instrument_ids)
        book.apply_prices(np.arange(n, dtype=I32), rng.uniform(50, 3000, n), np.full(n, 100 + step, I64))
    if rng.random() < 0.3:
        book.apply_fx(np.array([book.currency("EUR")], I32), np.array([rng.uniform(1.0, 1.2)]), np.array([100 + step], I64))
    if rng.random() < 0.4:
        p = int(rng.integers(0, 6))
        ccy = book.currency(["USD", "EUR", "JPY"][rng.integers(0, 3)])
        book.apply_cash_flows(np.array([p], I32), np.array([ccy], I32), np.array([CashFlowType.DEPOSIT], I8),
                              np.array([float(rng.integers(1, 5000))]), np.array([100 + step], I64))
    if step == 3:
        book.set_limit("P1", "SECTOR", "Technology", 0.25)
        book.set_limit("P2", "CURRENCY", "JPY", 0.1)


@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_compiled_capture_pieces_give_the_rows_of_the_numpy_formulas(eps):
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    book = make_book(n_portfolios=6)
    caps = [ChangeCapture(book, revalue_max_rows=7, weight_epsilon=eps) for _ in range(2)]
    got, ref = caps
    for step in range(30):
        _random_step(book, rng, step)
        for c in caps:
            c._fit()
        n, P = len(book.slot_ids), len(book.portfolio_ids)
        ps = np.flatnonzero(rng.random(P) < 0.7).astype(np.int64)
        if step % 7 == 6:
            got.heartbeat()
            ref.heartbeat()
        _same(_rows(got.aggregate_exposures(ps)), ref_aggregate(ref, ps, record=True))
        _same(_rows(got.aggregate_exposures(ps, record=False)), ref_aggregate(ref, ps, record=False))
        for t, _ in AGGREGATES:
            for x, y in zip(got.last_agg[t], ref.last_agg[t]):
                np.testing.assert_array_equal(x, y)
        assert np.array_equal(got.exp_force, ref.exp_force)
        for w, r in zip(got._revalued(n), ref_revalued(ref, n)):
            np.testing.assert_array_equal(w, r)
        assert got.reval_cursor == ref.reval_cursor
        s = got.states(ps)
        for x, y in zip([s.total, s.cash, s.invested, s.available_cash, s.margin_used, s.margin_available,
                         s.leverage, s.position_count, s.init_margin, s.maint_margin, s.excess_liquidity,
                         s.buying_power, s.updated_ns], ref_states(ref, ps)):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
        assert list(s.portfolio_id) == [book.portfolio_ids.ids[p] for p in ps]
        assert got._cash(ps) == ref_cash(ref, ps)
        assert np.array_equal(got.ccy_seen, ref.ccy_seen)
        # advance both captures' "last handed off" values the same way (what a take does)
        every = np.arange(n, dtype=np.int64)
        for c in caps:
            c._positions(every, np.ones(n, np.bool_))
            c.instrument_exposures(every[book.a.positions["head"][:n] == every])


def test_the_edges_the_random_walk_rarely_meets():
    """Leverage of a portfolio worth exactly 0 with positions (+inf), a zero balance in a currency
    the portfolio has exposure in but never held at a hand-off (written, as 0), and a portfolio
    with nothing in it (no rows, zero leverage and buying power)."""
    book = make_book(n_portfolios=3, deposit=0.0)
    caps = [ChangeCapture(book) for _ in range(2)]
    got, ref = caps
    # P0 (LONG_SHORT, USD) buys 100 AAPL at 190 on margin: cash -19,000, invested +19,000, total 0
    trade(book, "P0", "a", "AAPL", TradeKind.BUY, 100, 190.0)
    # P2 (EUR base) buys SAP, paying EUR; a deposit of exactly the cost brings EUR cash back to 0
    out, _ = trade(book, "P2", "s", "SAP", TradeKind.BUY, 10, 120.0)
    eur = book.currency("EUR")
    book.apply_cash_flows(np.array([2], I32), np.array([eur], I32), np.array([CashFlowType.DEPOSIT], I8),
                          np.array([-book.a.cash[2, eur] / 100]), np.array([20], I64))
    assert book.a.cash[2, eur] == 0 and book.a.exp_currency[2, eur] != 0
    for c in caps:
        c._fit()
    ps = np.arange(3, dtype=np.int64)
    s = got.states(ps)
    assert s.total[0] == 0 and s.leverage[0] == np.inf
    assert s.total[1] == 0 and s.leverage[1] == 0.0 and s.buying_power[1] == 0
    np.testing.assert_array_equal(s.leverage, ref_states(ref, ps)[6])
    cash = got._cash(ps)
    assert ("P2", "EUR", 0) in cash
    assert cash == ref_cash(ref, ps)
    _same(_rows(got.aggregate_exposures(ps)), ref_aggregate(ref, ps, record=True))
    assert not [r for r in _rows(got.aggregate_exposures(ps, record=False)) if r[0] == 1]
