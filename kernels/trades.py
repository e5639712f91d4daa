"""The trade kernel: BUY, SELL, SHORT, COVER, ADJUST, TRANSFER_IN, TRANSFER_OUT, SPLIT.

Owns: ``apply_trades_nb``, which applies a whole batch of position updates in one
call, in row order, writing one ``trade_out_dt`` row and five exposure changes per
input row. A rejected row gets a ``Reason`` code and changes nothing; the rest of
the batch applies.
Runs on: the engine thread. Imports: numpy, numba, kernels.

Cost basis is *average cost*, kept as the signed total cost of the position in
instrument-currency cents (long > 0, short < 0); average price = cost / qty.

  notional N        = muldiv(dq, price_nano * multiplier, 1e13), signed like dq (BUY > 0)
  cash              -= N + fee                         (instrument currency)
  increase          cost += N
  reduction by c    cost_removed = muldiv(cost, |c|, |qty|)    (pro rata, exact when closing all)
                    realized     = -N_c - cost_removed          (N_c: notional of the closed part)
  through zero      closes the whole position (realized as above), then opens the rest
                    at the trade price: cost = N - N_c
  fee               cash -= fee; realized -= fee               (fees are expensed, not capitalized)
  ADJUST            qty += signed quantity; no cash; cost unchanged; at zero the
                    remaining cost is written off to realized; may not cross zero
  TRANSFER_IN       |qty| grows (long when flat) at cost muldiv(q, price, 1e13); no cash
  TRANSFER_OUT      |qty| shrinks, cost leaves pro rata; no cash, no realized; may not cross zero
  SPLIT             qty = muldiv(qty, rint(ratio * 1e6), 1e6); cost unchanged, unless the
                    split rounds the position to 0: then, as for ADJUST, the cost is written
                    off to realized (a flat position never carries cost into its next opening)
Directional quantities are magnitudes (> 0); the kind gives the sign. Long-only
portfolios reject SHORT (and ADJUST below zero) and SELL beyond the held quantity.
A row whose quantity, notional, cost, cash balance or realized P&L would leave the
fixed-point range (MAX_QTY, MAX_MONEY) is rejected with OVERFLOW.
"""
import numpy as np


from .enums import (
    MAX_MONEY,
    MAX_PRICE,
    MAX_QTY,
    MONEY_SCALE,
    NOTIONAL_DIV,
    PF_ACTIVE,
    PF_LONG_ONLY,
    IF_DEFINED,
    PRICE_SCALE,
    QTY_SCALE,
    PositionStatus,
    Reason,
    TradeKind,
)
from .fixedpoint import (
    fx_known_nb,
    fx_ratio_nb,
    muldiv_round_nb,
    notional_ok_nb,
    release_fence_nb,
    to_fixed_nb,
    value_ok_nb,
)
from .jit import inline, kernel
from .prefetch import CHUNK, warm_trades_far_nb, warm_trades_near_nb
from .valuation import (
    apply_cash_change_nb,
    apply_mv_change_nb,
    mark_nb,
    pct_nb,
    total_value_nb,
)


@inline
def _sign_nb(x):
    return (x > 0) - (x < 0)


@kernel
def exposure_values_nb(b, slot, out_row, col, total):
    """Write the five exposure percentages of slot's categories into out_row[:, col]."""
    pos = b.positions[slot]
    p = pos.portfolio
    ins = b.instruments[pos.instrument]
    out_row[0, col] = pct_nb(b.positions[pos.head].inst_exp, total)
    out_row[1, col] = pct_nb(b.exp_sector[p, ins.sector], total)
    out_row[2, col] = pct_nb(b.exp_country[p, ins.country], total)
    out_row[3, col] = pct_nb(b.exp_currency[p, ins.currency], total)
    out_row[4, col] = pct_nb(b.exp_asset[p, ins.asset_class], total)


@kernel
def apply_trades_nb(b, kind, portfolio, slot, qty, price, fee, ts, out, exp_out):
    """Apply a batch of position updates; return the number accepted.

    Inputs are columns of equal length n: kind int8 (TradeKind), portfolio int32,
    slot int32 (position slot, from the id map), qty float64 (units; for SPLIT the
    ratio), price float64 (per unit, instrument currency), fee float64 (>= 0),
    ts int64 (ns). Outputs: out trade_out_dt[n]; exp_out float64[n, 5, 2] with the
    (old, new) exposure_percentage of INSTRUMENT, SECTOR, GEOGRAPHIC, CURRENCY,
    ASSET_CLASS for the row's categories.
    """
    n = kind.shape[0]
    n_ok = 0
    # rows go in chunks; the memory each row will touch is requested a chunk ahead
    # (kernels/prefetch.py), so the row loop itself mostly hits the cache
    warm_trades_far_nb(b, portfolio, slot, 0, min(n, CHUNK))
    for c0 in range(0, n, CHUNK):
        c1 = min(n, c0 + CHUNK)
        warm_trades_far_nb(b, portfolio, slot, c1, min(n, c1 + CHUNK))
        warm_trades_near_nb(b, portfolio, slot, c0, c1)
        for i in range(c0, c1):
            o = out[i]
            o.reason = Reason.OK
            r = _apply_row_nb(b, kind[i], portfolio[i], slot[i], qty[i], price[i], fee[i], ts[i], o, exp_out[i])
            o.reason = r
            if r == Reason.OK:
                n_ok += 1
    return n_ok


@inline
def _apply_row_nb(b, k, p, s, q_in, px_in, fee_in, t, o, ex):
    # ---- validation: nothing below this block may be rejected ----
    if p < 0 or p >= b.portfolios.shape[0] or (b.portfolios[p].flags & PF_ACTIVE) == 0:
        return Reason.UNKNOWN_PORTFOLIO
    if s < 0 or s >= b.positions.shape[0]:
        return Reason.UNKNOWN_POSITION
    pos = b.positions[s]
    if pos.portfolio != p:
        return Reason.UNKNOWN_POSITION
    if pos.instrument < 0 or pos.instrument >= b.instruments.shape[0]:
        return Reason.UNKNOWN_INSTRUMENT
    ins = b.instruments[pos.instrument]
    if (ins.flags & IF_DEFINED) == 0:
        return Reason.UNKNOWN_INSTRUMENT
    if k < TradeKind.BUY or k > TradeKind.SPLIT:
        return Reason.BAD_KIND
    if pos.status == PositionStatus.SUSPENDED:
        return Reason.SUSPENDED
    pf = b.portfolios[p]
    long_only = (pf.flags & PF_LONG_ONLY) != 0
    ratio = fx_ratio_nb(b.fx, ins.currency, pf.base_ccy)
    if not fx_known_nb(ratio):
        return Reason.NO_FX_RATE
    ok, fee = to_fixed_nb(fee_in, MONEY_SCALE, MAX_MONEY)
    if not ok or fee < 0:
        return Reason.BAD_FEE

    old = pos.qty
    uses_price = k <= TradeKind.COVER or k == TradeKind.TRANSFER_IN
    px = np.int64(0)
    if uses_price:
        ok, px = to_fixed_nb(px_in, PRICE_SCALE, MAX_PRICE)
        if not ok or px <= 0:
            return Reason.BAD_PRICE
    elif ins.price == 0:
        return Reason.NO_PRICE
    mark_px = ins.price if ins.price > 0 else px
    if np.float64(mark_px) * np.float64(ins.multiplier) > 9.0e18 or (
        uses_price and np.float64(px) * np.float64(ins.multiplier) > 9.0e18
    ):
        return Reason.OVERFLOW

    if k == TradeKind.SPLIT:
        ok, ratio_micro = to_fixed_nb(q_in, QTY_SCALE, MAX_QTY)
        if not ok or ratio_micro <= 0:
            return Reason.BAD_RATIO
        if not notional_ok_nb(old, ratio_micro, QTY_SCALE * MONEY_SCALE):
            return Reason.OVERFLOW
        dq = muldiv_round_nb(old, ratio_micro, QTY_SCALE) - old
    else:
        ok, q = to_fixed_nb(q_in, QTY_SCALE, MAX_QTY)
        if not ok or q == 0:
            return Reason.BAD_QUANTITY
        if k != TradeKind.ADJUST and q < 0:
            return Reason.BAD_QUANTITY
        if k == TradeKind.BUY or k == TradeKind.COVER:
            dq = q
        elif k == TradeKind.SELL or k == TradeKind.SHORT:
            dq = -q
        elif k == TradeKind.TRANSFER_IN:
            dq = -q if old < 0 else q
        elif k == TradeKind.TRANSFER_OUT:
            if old == 0 or q > abs(old):
                return Reason.CROSSES_ZERO
            dq = -q if old > 0 else q
        else:  # ADJUST
            dq = q
            if old != 0 and _sign_nb(old + dq) == -_sign_nb(old):
                return Reason.CROSSES_ZERO
    new = old + dq
    if abs(new) > MAX_QTY or not value_ok_nb(new, mark_px * ins.multiplier, ratio):
        return Reason.OVERFLOW
    if long_only:
        if k == TradeKind.SHORT or (new < 0 and k == TradeKind.ADJUST):
            return Reason.LONG_ONLY_SHORT
        if new < 0:
            return Reason.LONG_ONLY_OVERSELL

    # ---- money of the row, still without touching state ----
    cost = pos.cost
    realized = np.int64(0)
    cash_delta = np.int64(0)
    px_eff = px * ins.multiplier
    if k <= TradeKind.COVER:
        if not notional_ok_nb(dq, px_eff, NOTIONAL_DIV):
            return Reason.OVERFLOW
        notional = muldiv_round_nb(dq, px_eff, NOTIONAL_DIV)
        cash_delta = -notional
        if old == 0 or _sign_nb(dq) == _sign_nb(old):
            cost += notional
        else:
            closed = dq if abs(dq) <= abs(old) else -old
            n_closed = notional if closed == dq else muldiv_round_nb(closed, px_eff, NOTIONAL_DIV)
            removed = muldiv_round_nb(cost, abs(closed), abs(old))
            realized = -n_closed - removed
            cost = cost - removed + (notional - n_closed)
    elif k == TradeKind.TRANSFER_IN:
        if not notional_ok_nb(dq, px_eff, NOTIONAL_DIV):
            return Reason.OVERFLOW
        cost += muldiv_round_nb(dq, px_eff, NOTIONAL_DIV)
    elif k == TradeKind.TRANSFER_OUT:
        cost -= muldiv_round_nb(cost, abs(dq), abs(old))
    elif k == TradeKind.ADJUST or k == TradeKind.SPLIT:
        if new == 0:
            realized = -cost
            cost = np.int64(0)
    if abs(cost) > MAX_MONEY:
        return Reason.OVERFLOW
    cash_delta -= fee
    realized -= fee
    # the balances this row adds to stay in range too (as in cash.py): int64 would wrap
    if abs(b.cash[p, ins.currency] + cash_delta) > MAX_MONEY or abs(pos.realized + realized) > MAX_MONEY:
        return Reason.OVERFLOW

    # ---- apply: the portfolio is odd (being written) from here to the end ----
    old_total = total_value_nb(pf)
    old_mv = pos.mv
    exposure_values_nb(b, s, ex, 0, old_total)
    pf.version += 1
    release_fence_nb()

    if ins.price == 0:
        ins.price = px
        ins.price_ns = t
    cash_impact = apply_cash_change_nb(b, p, ins.currency, cash_delta) if cash_delta != 0 else np.int64(0)
    pos.qty = new
    pos.cost = cost
    pos.realized += realized
    pos.updated_ns = t
    if (old != 0) != (new != 0):
        pf.position_count += 1 if new != 0 else -1
    if new != 0:
        pos.status = PositionStatus.ACTIVE
    elif old != 0 or pos.status == PositionStatus.FREE:
        pos.status = PositionStatus.CLOSED
    apply_mv_change_nb(b, s, mark_nb(b, s))
    pf.seq += 1
    pf.updated_ns = t

    release_fence_nb()
    pf.version += 1

    total = total_value_nb(pf)
    exposure_values_nb(b, s, ex, 1, total)
    o.old_qty = old
    o.qty = new
    o.cost = cost
    o.realized = realized
    o.pos_realized = pos.realized
    o.ts = t
    o.status = pos.status
    o.old_mv = old_mv
    o.mv = pos.mv
    o.cash_impact = cash_impact
    o.value_change = total - old_total
    o.old_weight = pct_nb(old_mv, old_total)
    o.weight = pct_nb(pos.mv, total)
    return Reason.OK
