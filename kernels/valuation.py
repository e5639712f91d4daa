"""Valuation: how a position's market value and a portfolio's cash reach the aggregates.

Owns: ``mark_nb`` (a position's market value) and the two propagators every
kernel goes through, ``apply_mv_change_nb`` (``move_mv_nb`` when the caller already
holds the instrument's rates and categories) and ``apply_cash_change_nb``, plus the
read-side formulas (``total_value_nb``). One place per formula, so the trade,
price, FX and reference-data paths cannot disagree.
Runs on: the engine thread. Imports: numpy, numba, kernels.

Formulas (base currency, cents unless said; signs: long > 0, short < 0):
  market_value      mv = rint(muldiv(qty_micro, price_nano * multiplier, 1e13) * fx(ccy -> base))
  unrealized_pnl    = mv - rint(cost * fx(ccy -> base))        (cost in instrument currency)
  cash_balance      = sum over currencies c of rint(cash[c] * fx(c -> base))
  invested_value    = long_mv + short_mv                       (net market value of positions)
  gross_exposure    = long_mv - short_mv                       (sum of |mv|)
  total_value       = cash_balance + invested_value            (equity, net liquidation value)
  weight            = mv / total_value                         (fraction; 0 when total_value == 0)
  leverage_ratio    = gross_exposure / total_value             (0 when flat; +inf when equity <= 0 and gross > 0)
  initial_margin    = sum of rint(|mv| * rate_init(side))      (long_init for mv > 0, short_init for mv < 0)
  maintenance_margin= sum of rint(|mv| * rate_maint(side))
                      Cash (long-only) portfolios carry no margin: both are 0.
  margin_used       = initial_margin
  margin_available  = max(0, total_value - initial_margin)
  excess_liquidity  = total_value - maintenance_margin         (signed; < 0 is a margin call)
  available_cash    = max(0, min(cash_balance, total_value - initial_margin))
  buying_power      = margin accounts: margin_available / EQUITY long_init rate (Reg T: 2x);
                      cash accounts: available_cash
  exposure_value    = net mv of the category's positions (+ cash, for CURRENCY)
  exposure_percentage = exposure_value / total_value          (0 when total_value == 0)
  utilization       = |exposure_percentage| / limit_percentage (NaN when no limit)
"""
import numpy as np


from .enums import NOTIONAL_DIV, PF_LONG_ONLY
from .fixedpoint import fx_ratio_nb, muldiv_round_nb, to_base_nb
from .jit import inline


@inline
def local_value_nb(qty, price, multiplier):
    """Market value in instrument-currency cents of qty micro-units at price nano."""
    return muldiv_round_nb(qty, price * multiplier, NOTIONAL_DIV)


@inline
def mark_nb(b, slot):
    """The market value (base cents) position ``slot`` has at current price and FX."""
    pos = b.positions[slot]
    if pos.qty == 0:
        return np.int64(0)
    ins = b.instruments[pos.instrument]
    ratio = fx_ratio_nb(b.fx, ins.currency, b.portfolios[pos.portfolio].base_ccy)
    return to_base_nb(local_value_nb(pos.qty, ins.price, ins.multiplier), ratio)


@inline
def margin_nb(mv, rate_long, rate_short):
    """Margin on one position: rint(|mv| * rate of its side)."""
    if mv > 0:
        return np.int64(np.rint(mv * rate_long))
    if mv < 0:
        return np.int64(np.rint(-mv * rate_short))
    return np.int64(0)


@inline
def apply_mv_change_nb(b, slot, new_mv):
    """Set position ``slot``'s market value to ``new_mv`` and move every aggregate with it.

    Touches: portfolio long/short mv and margins, the INSTRUMENT exposure on the
    head slot, and the sector, country, currency and asset-class rows. O(1).
    The caller holds the portfolio's seqlock.
    """
    ins = b.instruments[b.positions[slot].instrument]
    move_mv_nb(b, slot, new_mv, ins.long_init, ins.short_init, ins.long_maint, ins.short_maint,
               ins.sector, ins.country, ins.currency, ins.asset_class)


@inline
def move_mv_nb(b, slot, new_mv, long_init, short_init, long_maint, short_maint, sector, country, currency, asset):
    """``apply_mv_change_nb`` with the position's instrument's margin rates and categories given
    (a price tick's walk reads them once for all the instrument's holders)."""
    pos = b.positions[slot]
    old_mv = pos.mv
    if old_mv == new_mv:
        return
    p = pos.portfolio
    pf = b.portfolios[p]
    if old_mv > 0:
        pf.long_mv -= old_mv
    else:
        pf.short_mv -= old_mv
    if new_mv > 0:
        pf.long_mv += new_mv
    else:
        pf.short_mv += new_mv
    if (pf.flags & PF_LONG_ONLY) == 0:
        pf.init_margin += margin_nb(new_mv, long_init, short_init) - margin_nb(old_mv, long_init, short_init)
        pf.maint_margin += margin_nb(new_mv, long_maint, short_maint) - margin_nb(old_mv, long_maint, short_maint)
    d = new_mv - old_mv
    b.positions[pos.head].inst_exp += d
    b.exp_sector[p, sector] += d
    b.exp_country[p, country] += d
    b.exp_currency[p, currency] += d
    b.exp_asset[p, asset] += d
    pos.mv = new_mv


@inline
def apply_cash_change_nb(b, p, ccy, delta):
    """Add ``delta`` cents to portfolio p's cash in ``ccy``; return the base-cents change
    (``cash_change_nb`` on the book's arrays)."""
    return cash_change_nb(b.portfolios, b.fx, b.cash, b.exp_currency, p, ccy, delta)


@inline
def cash_change_nb(portfolios, fx, cash, exp_currency, p, ccy, delta):
    """Add ``delta`` cents to portfolio p's cash in ``ccy``; return the base-cents change.

    cash_balance and the CURRENCY exposure move by rint(new * fx) - rint(old * fx),
    so they always equal the per-currency formula exactly.
    """
    pf = portfolios[p]
    ratio = fx_ratio_nb(fx, ccy, pf.base_ccy)
    old = cash[p, ccy]
    new = old + delta
    cash[p, ccy] = new
    d = to_base_nb(new, ratio) - to_base_nb(old, ratio)
    pf.cash_base += d
    exp_currency[p, ccy] += d
    return d


@inline
def total_value_nb(pf):
    """total_value = cash_balance + invested_value, base cents."""
    return pf.cash_base + pf.long_mv + pf.short_mv


@inline
def pct_nb(value, total):
    """value / total as a fraction; 0 when total == 0."""
    if total == 0:
        return 0.0
    return value / total
