"""Market-data kernels: price ticks and FX ticks revalue what they touch, nothing else.

Owns: ``apply_prices_nb`` and ``apply_fx_nb``.
Runs on: the engine thread. Imports: numpy, numba, kernels.

A price tick on instrument i walks only i's slot list (the instrument -> slots
index), never the whole book, and reads what every holder shares once: the price x
multiplier, the instrument's margin rates and categories, and the FX ratio while
consecutive holders share a base currency (-10% time per revalued position at 10M
slots, perf/bench_kernels.py, against re-reading them per holder). An FX tick on
currency c revalues the positions of
instruments quoted in c, the cash held in c, and, for portfolios whose base
currency is c, every foreign position and foreign cash balance.
Each touched portfolio's seqlock is held around each change to it.
"""
import numpy as np


from .enums import IF_DEFINED, MAX_MONEY, MAX_PRICE, PRICE_SCALE, Reason
from .fixedpoint import fx_ratio_nb, release_fence_nb, to_base_nb, to_fixed_nb, value_ok_nb
from .jit import inline, kernel
from .prefetch import prefetch_holding_nb
from .valuation import local_value_nb, mark_nb, move_mv_nb


@inline
def _revalue_nb(b, slot, t):
    """Mark position ``slot`` at its instrument's price and FX now (an FX tick's walk)."""
    ins = b.instruments[b.positions[slot].instrument]
    _set_mv_nb(b, slot, t, mark_nb(b, slot), (ins.long_init, ins.short_init, ins.long_maint, ins.short_maint),
               (ins.sector, ins.country, ins.currency, ins.asset_class))


@inline
def _set_mv_nb(b, slot, t, new_mv, rates, cats):
    """Move position ``slot`` to market value ``new_mv`` under its portfolio's seqlock (nothing
    when unchanged); ``rates`` and ``cats`` are its instrument's margin rates and categories."""
    pos = b.positions[slot]
    if new_mv == pos.mv:
        return
    pf = b.portfolios[pos.portfolio]
    pf.version += 1
    release_fence_nb()
    move_mv_nb(b, slot, new_mv, rates[0], rates[1], rates[2], rates[3], cats[0], cats[1], cats[2], cats[3])
    pf.updated_ns = t
    release_fence_nb()
    pf.version += 1


@kernel
def apply_prices_nb(b, instrument, price, ts, reason):
    """Apply price ticks in row order; return the number of positions revalued.

    instrument int32[n], price float64[n] (per unit, instrument currency),
    ts int64[n]; reason int32[n] receives a Reason per tick.
    """
    n_revalued = 0
    max_ratio = _max_fx_ratio_nb(b.fx)
    for i in range(instrument.shape[0]):
        k = instrument[i]
        if k < 0 or k >= b.instruments.shape[0] or (b.instruments[k].flags & IF_DEFINED) == 0:
            reason[i] = Reason.UNKNOWN_INSTRUMENT
            continue
        ok, px = to_fixed_nb(price[i], PRICE_SCALE, MAX_PRICE)
        if not ok or px <= 0 or np.float64(px) * np.float64(b.instruments[k].multiplier) > 9.0e18:
            reason[i] = Reason.BAD_PRICE
            continue
        ins = b.instruments[k]
        # no holding can leave the range unless the largest possible one, at the largest FX ratio, could
        if (np.float64(px) * ins.multiplier * QTY_PER_NANO * max_ratio > MAX_MONEY
                and not _tick_fits_nb(b, k, px * ins.multiplier)):
            reason[i] = Reason.OVERFLOW  # some holding's value would leave the numeric range
            continue
        reason[i] = Reason.OK
        ins.price = px
        ins.price_ns = ts[i]
        start = b.inst_start[k]
        n = b.inst_len[k]
        px_eff = px * ins.multiplier
        ccy = ins.currency
        rates = (ins.long_init, ins.short_init, ins.long_maint, ins.short_maint)
        cats = (ins.sector, ins.country, ccy, ins.asset_class)
        last_base = ccy
        ratio = 1.0  # fx_ratio_nb(fx, ccy, ccy): the ratio is kept while holders share a base currency
        for j in range(n):
            prefetch_holding_nb(b, start, n, j)  # holders ahead start loading (kernels/prefetch.py)
            s = b.inst_pool[start + j]
            if b.positions[s].qty != 0:
                base = b.portfolios[b.positions[s].portfolio].base_ccy
                if base != last_base:
                    last_base = base
                    ratio = fx_ratio_nb(b.fx, ccy, base)
                # the same mark as mark_nb, from what the holders share
                _set_mv_nb(b, s, ts[i], to_base_nb(local_value_nb(b.positions[s].qty, px_eff, 1), ratio), rates, cats)
                n_revalued += 1
    return n_revalued


#: MAX_QTY micro-units at px_eff nano-units are worth px_eff * QTY_PER_NANO cents at most
QTY_PER_NANO = 100.0


@kernel
def _max_fx_ratio_nb(fx):
    """The largest fx[a] / fx[b] between known rates: a bound on any position's conversion."""
    hi = 0.0
    lo = np.inf
    for r in fx:
        if np.isfinite(r) and r > 0.0:
            hi = max(hi, r)
            lo = min(lo, r)
    return hi / lo if hi > 0.0 else 1.0


@kernel
def _tick_fits_nb(b, k, px_eff):
    """Would every held position of instrument k stay in range at px_eff? (A pre-scan: a tick is
    applied whole or not at all.)"""
    start = b.inst_start[k]
    ccy = b.instruments[k].currency
    for j in range(b.inst_len[k]):
        pos = b.positions[b.inst_pool[start + j]]
        if pos.qty != 0:
            base = b.portfolios[pos.portfolio].base_ccy
            if not value_ok_nb(pos.qty, px_eff, fx_ratio_nb(b.fx, ccy, base)):
                return False
    return True


@kernel
def _fx_fits_nb(b, c, r):
    """Would every position and cash balance touched by rate r for currency c stay in range?"""
    n_ccy = b.fx.shape[0]
    for p in range(b.portfolios.shape[0]):
        base = b.portfolios[p].base_ccy
        for k in range(n_ccy):
            cash = b.cash[p, k]
            if cash == 0 or (k != c and base != c):
                continue
            fk = r if k == c else b.fx[k]
            fb = r if base == c else b.fx[base]
            if abs(np.float64(cash) * (fk / fb)) > MAX_MONEY:
                return False
    for s in range(b.positions.shape[0]):
        pos = b.positions[s]
        if pos.qty == 0:
            continue
        ins = b.instruments[pos.instrument]
        base = b.portfolios[pos.portfolio].base_ccy
        if ins.currency != c and base != c:
            continue
        fk = r if ins.currency == c else b.fx[ins.currency]
        fb = r if base == c else b.fx[base]
        if not value_ok_nb(pos.qty, ins.price * ins.multiplier, fk / fb):
            return False
    return True


@kernel
def _recash_nb(b, p, ccy, old_ratio, new_ratio):
    """Move portfolio p's cash in ccy from old_ratio to new_ratio in the base totals."""
    c = b.cash[p, ccy]
    if c == 0 or not np.isfinite(old_ratio):  # no cash can exist without a known rate
        return
    d = to_base_nb(c, new_ratio) - to_base_nb(c, old_ratio)
    if d == 0:
        return
    pf = b.portfolios[p]
    pf.version += 1
    release_fence_nb()
    pf.cash_base += d
    b.exp_currency[p, ccy] += d
    release_fence_nb()
    pf.version += 1


@kernel
def apply_fx_nb(b, currency, rate, ts, pivot, reason):
    """Apply FX ticks in row order; return the number of positions revalued.

    currency int32[n]; rate float64[n] = value of one unit in the pivot currency
    (> 0, finite); the pivot's own rate is fixed at 1 and a tick for it is
    rejected. reason int32[n] receives a Reason per tick.
    """
    n_revalued = 0
    n_ccy = b.fx.shape[0]
    for i in range(currency.shape[0]):
        c = currency[i]
        r = rate[i]
        if c < 0 or c >= n_ccy or c == pivot or not np.isfinite(r) or r <= 0.0:
            reason[i] = Reason.BAD_PRICE
            continue
        if not _fx_fits_nb(b, c, r):
            reason[i] = Reason.OVERFLOW  # some holding or cash balance would leave the numeric range
            continue
        reason[i] = Reason.OK
        old_rate = b.fx[c]
        # cash first: it needs the old and the new ratio side by side
        for p in range(b.portfolios.shape[0]):
            base = b.portfolios[p].base_ccy
            if base == c:
                for k in range(n_ccy):
                    if k != c and np.isfinite(b.fx[k]):
                        _recash_nb(b, p, k, b.fx[k] / old_rate, b.fx[k] / r)
            elif np.isfinite(b.fx[base]):
                _recash_nb(b, p, c, old_rate / b.fx[base], r / b.fx[base])
        b.fx[c] = r
        for k in range(b.instruments.shape[0]):
            if b.instruments[k].currency != c:
                continue
            start = b.inst_start[k]
            for j in range(b.inst_len[k]):
                s = b.inst_pool[start + j]
                if b.positions[s].qty != 0:
                    _revalue_nb(b, s, ts[i])
                    n_revalued += 1
        for p in range(b.portfolios.shape[0]):
            if b.portfolios[p].base_ccy != c:
                continue
            start = b.pf_start[p]
            for j in range(b.pf_len[p]):
                s = b.pf_pool[start + j]
                if b.positions[s].qty != 0 and b.instruments[b.positions[s].instrument].currency != c:
                    _revalue_nb(b, s, ts[i])
                    n_revalued += 1
    return n_revalued

