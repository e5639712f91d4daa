"""The cash-flow kernel: DEPOSIT, WITHDRAWAL, DIVIDEND, INTEREST, FEE.


Owns: ``apply_cash_flows_nb``.
Runs on: the engine thread. Imports: numpy, numba, kernels.

Amounts are magnitudes (> 0) in the flow's currency; the type gives the sign:
DEPOSIT, DIVIDEND, INTEREST credit the cash balance of that currency, WITHDRAWAL
and FEE debit it. A balance may go negative (an overdraft is a fact the book
records, not a flow it refuses). A currency without a known FX rate to the
portfolio's base currency is rejected (NO_FX_RATE).
"""

from .jit import kernel
from .enums import MAX_MONEY, MONEY_SCALE, PF_ACTIVE, CashFlowType, Reason
from .fixedpoint import fx_known_nb, fx_ratio_nb, release_fence_nb, to_fixed_nb
from .valuation import apply_cash_change_nb


@kernel
def apply_cash_flows_nb(b, portfolio, currency, kind, amount, ts, out):
    """Apply a batch of cash flows in row order; return the number accepted.

    portfolio int32[n], currency int32[n], kind int8[n] (CashFlowType),
    amount float64[n] (> 0), ts int64[n]; out cash_out_dt[n].
    """
    n_ok = 0
    for i in range(portfolio.shape[0]):
        o = out[i]
        p = portfolio[i]
        c = currency[i]
        k = kind[i]
        o.reason = Reason.OK
        if p < 0 or p >= b.portfolios.shape[0] or (b.portfolios[p].flags & PF_ACTIVE) == 0:
            o.reason = Reason.UNKNOWN_PORTFOLIO
            continue
        if k < CashFlowType.DEPOSIT or k > CashFlowType.FEE:
            o.reason = Reason.BAD_KIND
            continue
        ok, cents = to_fixed_nb(amount[i], MONEY_SCALE, MAX_MONEY)
        if not ok or cents <= 0:
            o.reason = Reason.BAD_AMOUNT
            continue
        pf = b.portfolios[p]
        if c < 0 or c >= b.fx.shape[0] or not fx_known_nb(fx_ratio_nb(b.fx, c, pf.base_ccy)):
            o.reason = Reason.NO_FX_RATE
            continue
        if k == CashFlowType.WITHDRAWAL or k == CashFlowType.FEE:
            cents = -cents
        if abs(b.cash[p, c] + cents) > MAX_MONEY:
            o.reason = Reason.OVERFLOW
            continue
        pf.version += 1
        release_fence_nb()
        o.cash_impact = apply_cash_change_nb(b, p, c, cents)
        pf.seq += 1
        pf.updated_ns = ts[i]
        release_fence_nb()
        pf.version += 1
        o.amount = cents
        o.cash = b.cash[p, c]
        n_ok += 1
    return n_ok
