"""The write-behind capture's per-row work, compiled: position rows and INSTRUMENT exposure rows.

Owns: ``position_rows_nb`` (a hand-off's position rows from the book, and the values last
handed off, which it advances) and ``instrument_rows_nb`` (INSTRUMENT exposure rows of head
slots). Runs on: the engine thread at each write-behind tick (or the write-behind thread over a
scratch book during catch-up). Imports: numpy, numba, kernels.

They replace chains of NumPy gathers over the book's structured arrays (each field a strided
gather, a temporary and a pass): ~1 µs per row at 10,000 rows, which the engine thread paid
every ``sink.flush_interval_ms`` as one stall (ADR 0020).

Formulas (units: quantities micro-units, money base cents unless noted):
- a position's weight = mv / total_value of its portfolio (0 when total_value is 0), where
  total_value = cash_base + long_mv + short_mv;
- its cost basis in base cents = rint(cost × fx[instrument currency] / fx[base currency]),
  rounded half to even, the instrument-currency cents unchanged when the currencies are the
  same, the cost is 0, or the conversion is not finite (a missing rate);
- an INSTRUMENT exposure's percentage = inst_exp / total_value (0 when total_value is 0), its
  limit the portfolio's default INSTRUMENT limit (NaN: none), its utilization
  |percentage| / limit (NaN when there is no positive limit).
"""
import numpy as np

from .jit import inline, kernel


@inline
def _total_nb(portfolios, p):
    pf = portfolios[p]
    return pf.cash_base + pf.long_mv + pf.short_mv


@inline
def _share_nb(value, total):
    return value / np.float64(total) if total != 0 else 0.0


@kernel(error_model="numpy")
def position_rows_nb(positions, portfolios, instruments, fx, slots, last_qty, last_mv, last_w, last_cost,
                     last_status, pf, inst, qty, cost, mv, w, status, upd, old_qty, old_mv, old_w):
    """Fill the position rows of ``slots`` (owner, instrument, quantity, cost basis in base cents,
    market value, weight, status, last update; and the quantity, value and weight last handed
    off), then make these the values last handed off."""
    for j in range(slots.shape[0]):
        s = slots[j]
        pos = positions[s]
        owner = max(pos.portfolio, 0)
        pf[j] = pos.portfolio
        inst[j] = pos.instrument
        qty[j] = pos.qty
        mv[j] = pos.mv
        status[j] = pos.status
        upd[j] = pos.updated_ns
        w[j] = _share_nb(pos.mv, _total_nb(portfolios, owner))
        c = pos.cost
        ccy = instruments[pos.instrument].currency
        base = portfolios[owner].base_ccy
        if ccy != base and c != 0:
            ratio = fx[ccy] / fx[base]
            conv = np.rint(c * ratio)
            if ratio != 1.0 and np.isfinite(conv):
                c = np.int64(conv)
        cost[j] = c
        old_qty[j] = last_qty[s]
        old_mv[j] = last_mv[s]
        old_w[j] = last_w[s]
        last_qty[s] = pos.qty
        last_mv[s] = pos.mv
        last_w[s] = w[j]
        last_cost[s] = c
        last_status[s] = pos.status


@kernel(error_model="numpy")
def instrument_rows_nb(positions, portfolios, heads, record, last_ie, last_ie_pct, pf, inst, value, pct, limit, util):
    """Fill the INSTRUMENT exposure rows of head slots ``heads`` (owner, instrument, exposure,
    percentage, default limit, utilization); with ``record``, make these the values last written."""
    for j in range(heads.shape[0]):
        h = heads[j]
        pos = positions[h]
        owner = max(pos.portfolio, 0)
        pf[j] = pos.portfolio
        inst[j] = pos.instrument
        value[j] = pos.inst_exp
        pct[j] = _share_nb(pos.inst_exp, _total_nb(portfolios, owner))
        lim = portfolios[pos.portfolio].inst_limit
        limit[j] = lim
        util[j] = abs(pct[j]) / lim if lim > 0 else np.nan
        if record:
            last_ie[h] = pos.inst_exp
            last_ie_pct[h] = pct[j]
