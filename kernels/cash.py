"""The cash-flow kernel: DEPOSIT, WITHDRAWAL, DIVIDEND, INTEREST, FEE.


Owns: ``apply_cash_flows_nb`` (a batch) and ``apply_cash_flow_nb`` (one), both ``cash_flow_nb``.
Runs on: the engine thread. Imports: numpy, numba, kernels.

Amounts are magnitudes (> 0) in the flow's currency; the type gives the sign:
DEPOSIT, DIVIDEND, INTEREST credit the cash balance of that currency, WITHDRAWAL
and FEE debit it. A balance may go negative (an overdraft is a fact the book
records, not a flow it refuses). A currency without a known FX rate to the
portfolio's base currency is rejected (NO_FX_RATE).
"""

import numpy as np

from .enums import MAX_MONEY, MONEY_SCALE, PF_ACTIVE, CashFlowType, Reason
from .fixedpoint import fx_known_nb, fx_ratio_nb, release_fence_nb, to_fixed_nb
from .jit import inline, kernel
from .valuation import cash_change_nb


@inline
def cash_flow_nb(portfolios, fx, cash, exp_currency, p, c, k, amount, ts):
    """One cash flow: (reason, signed amount in flow-currency cents, the new balance in that
    currency, the change of cash_balance in base cents); nothing changes unless reason is OK."""
    if p < 0 or p >= portfolios.shape[0] or (portfolios[p].flags & PF_ACTIVE) == 0:
        return Reason.UNKNOWN_PORTFOLIO, np.int64(0), np.int64(0), np.int64(0)
    if k < CashFlowType.DEPOSIT or k > CashFlowType.FEE:
        return Reason.BAD_KIND, np.int64(0), np.int64(0), np.int64(0)
    ok, cents = to_fixed_nb(amount, MONEY_SCALE, MAX_MONEY)
    if not ok or cents <= 0:
        return Reason.BAD_AMOUNT, np.int64(0), np.int64(0), np.int64(0)
    pf = portfolios[p]
    if c < 0 or c >= fx.shape[0] or not fx_known_nb(fx_ratio_nb(fx, c, pf.base_ccy)):
        return Reason.NO_FX_RATE, np.int64(0), np.int64(0), np.int64(0)
    if k == CashFlowType.WITHDRAWAL or k == CashFlowType.FEE:
        cents = -cents
    if abs(cash[p, c] + cents) > MAX_MONEY:
        return Reason.OVERFLOW, np.int64(0), np.int64(0), np.int64(0)
    pf.version += 1
    release_fence_nb()
    impact = cash_change_nb(portfolios, fx, cash, exp_currency, p, c, cents)
    pf.seq += 1
    pf.updated_ns = ts
    release_fence_nb()
    pf.version += 1
    return Reason.OK, np.int64(cents), cash[p, c], np.int64(impact)


@kernel
def apply_cash_flows_nb(b, portfolio, currency, kind, amount, ts, out):
    """Apply a batch of cash flows in row order; return the number accepted.

    portfolio int32[n], currency int32[n], kind int8[n] (CashFlowType),
    amount float64[n] (> 0), ts int64[n]; out cash_out_dt[n].
    """
    n_ok = 0
    for i in range(portfolio.shape[0]):
        o = out[i]
        o.reason, o.amount, o.cash, o.cash_impact = cash_flow_nb(
            b.portfolios, b.fx, b.cash, b.exp_currency, portfolio[i], currency[i], kind[i], amount[i], ts[i])
        if o.reason == Reason.OK:
            n_ok += 1
    return n_ok


@kernel
def apply_cash_flow_nb(portfolios, fx, cash, exp_currency, p, c, k, amount, ts):
    """One cash flow (a frame of one: the arrays it reads only, scalars in, a tuple out, so the
    call costs no array building or book unboxing): what ``cash_flow_nb`` returns."""
    return cash_flow_nb(portfolios, fx, cash, exp_currency, p, c, k, amount, ts)
