"""The write-behind capture's per-row work, compiled: position, exposure, state and cash rows,
and the revaluation scan.

Owns: ``position_rows_nb`` (a hand-off's position rows from the book, and the values last
handed off, which it advances), ``instrument_rows_nb`` (INSTRUMENT exposure rows of head
slots), ``aggregate_rows_nb`` (SECTOR .. ASSET_CLASS rows of snapshot portfolios),
``state_rows_nb`` and ``cash_rows_nb`` (their state, margin and cash rows) and
``revalue_scan_nb`` (a bounded window of slots compared with what was last handed off).
Runs on: the engine thread at each write-behind tick (or the write-behind thread over a
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


@inline
def _utilization_nb(share, limit):
    return abs(share) / limit if limit > 0 else np.nan


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
        util[j] = _utilization_nb(pct[j], lim)
        if record:
            last_ie[h] = pos.inst_exp
            last_ie_pct[h] = pct[j]


@kernel(error_model="numpy")
def aggregate_rows_nb(ps, totals, vals, lims, last_v, last_p, force, eps, record, etype, k,
                      pf, et, cat, value, pct, limit, util):
    """Append one aggregate ExposureType's rows (SECTOR .. ASSET_CLASS) of portfolios ``ps`` at
    row ``k`` of the output columns; returns the next free row. Portfolio by portfolio, category
    by category (the order of ``np.nonzero`` over a (portfolio, category) matrix).

    ``record`` (the time series): a category is written when its value changed since its last
    row and its percentage moved more than ``eps``, or to or from zero, and always when
    ``force`` (the portfolio's heartbeat) and its value is not zero; what is written becomes its
    last row (``last_v``, ``last_p``). Otherwise (a whole map): every non-zero category.
    Percentage = value / total_value (0 when that is 0); utilization = |percentage| / limit
    (NaN when there is no positive limit)."""
    C = vals.shape[1]
    for j in range(ps.shape[0]):
        p = ps[j]
        tot = totals[j]
        for c in range(C):
            v = vals[p, c]
            share = _share_nb(v, tot)
            if record:
                lv = last_v[p, c]
                emit = v != lv and (abs(share - last_p[p, c]) > eps or v == 0 or lv == 0)
                if force[j] and v != 0:
                    emit = True
                if not emit:
                    continue
                last_v[p, c] = v
                last_p[p, c] = share
            elif v == 0:
                continue
            lim = np.float64(lims[p, c])
            pf[k] = p
            et[k] = etype
            cat[k] = c
            value[k] = v
            pct[k] = share
            limit[k] = lim
            util[k] = _utilization_nb(share, lim)
            k += 1
    return k


@kernel(error_model="numpy")
def revalue_scan_nb(positions, portfolios, lo, hi, free, eps, last_qty, last_mv, last_w, last_status,
                    last_ie, last_ie_pct, slots, heads):
    """The revaluation window [lo, hi): into ``slots`` the live slots whose value, quantity,
    status or weight (moved more than ``eps``) differs from what was last handed off; into
    ``heads`` the head slots whose INSTRUMENT exposure changed and whose percentage moved more
    than ``eps``, or to or from zero. Returns (how many slots, how many heads), each ascending."""
    ns = 0
    nh = 0
    for s in range(lo, hi):
        pos = positions[s]
        total = _total_nb(portfolios, max(pos.portfolio, 0))
        w = _share_nb(pos.mv, total)
        if pos.status != free and (pos.mv != last_mv[s] or pos.qty != last_qty[s] or pos.status != last_status[s]
                                   or abs(w - last_w[s]) > eps):
            slots[ns] = s
            ns += 1
        ie = pos.inst_exp
        last = last_ie[s]
        if pos.head == s and ie != last:
            if abs(_share_nb(ie, total) - last_ie_pct[s]) > eps or ie == 0 or last == 0:
                heads[nh] = s
                nh += 1
    return ns, nh


@kernel(error_model="numpy")
def state_rows_nb(portfolios, ps, long_only_flag, total, cash, invested, avail_cash, margin_used, margin_avail,
                  leverage, count, init_margin, maint_margin, excess, buying_power, updated):
    """PortfolioState and MarginRequirement numbers of portfolios ``ps`` (the formulas of
    kernels.views): total = cash + invested (long_mv + short_mv); margin available =
    max(0, total - initial margin); available cash = max(0, min(cash, total - initial margin));
    leverage = gross / total (0 when gross is 0, +inf when total <= 0); excess liquidity =
    total - maintenance margin; buying power = available cash for a long-only portfolio,
    twice the margin available otherwise (Reg T: excess / 0.5)."""
    for j in range(ps.shape[0]):
        pf = portfolios[ps[j]]
        c = pf.cash_base
        inv = pf.long_mv + pf.short_mv
        gross = pf.long_mv - pf.short_mv
        tot = c + inv
        im = pf.init_margin
        room = tot - im
        avail = max(0, room)
        total[j] = tot
        cash[j] = c
        invested[j] = inv
        avail_cash[j] = max(0, min(c, room))
        margin_used[j] = im
        margin_avail[j] = avail
        if gross == 0:
            leverage[j] = 0.0
        elif tot <= 0:
            leverage[j] = np.inf
        else:
            leverage[j] = gross / np.float64(tot)
        count[j] = pf.position_count
        init_margin[j] = im
        maint_margin[j] = pf.maint_margin
        excess[j] = tot - pf.maint_margin
        buying_power[j] = avail_cash[j] if (pf.flags & long_only_flag) != 0 else avail * 2
        updated[j] = pf.updated_ns


@kernel
def cash_rows_nb(cash, exp_currency, seen, ps, C, pf, ccy, amount):
    """The cash balances of portfolios ``ps`` to write: the non-zero ones and the zero ones of
    currencies the portfolio has exposure in or has held at an earlier hand-off (a balance back
    at 0 must overwrite the old row); marks the non-zero ones as held. Returns how many."""
    k = 0
    for j in range(ps.shape[0]):
        p = ps[j]
        for x in range(C):
            v = cash[p, x]
            if v != 0 or exp_currency[p, x] != 0 or seen[p, x]:
                pf[k] = p
                ccy[k] = x
                amount[k] = v
                k += 1
            if v != 0:
                seen[p, x] = True
    return k
