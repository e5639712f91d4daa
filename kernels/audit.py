"""Audit: recompute every aggregate from the positions and cash, from scratch.

Owns: ``recompute_nb``, the slow obviously-complete counterpart of the
incremental kernels. Tests compare it with the live arrays (they must be equal
to the cent); the book uses it to rebuild one portfolio's margins when its
type changes between cash and margin account.
Runs on: the engine thread (or a test). Imports: numpy, numba, kernels.
"""


from .enums import PF_LONG_ONLY
from .fixedpoint import fx_ratio_nb, to_base_nb
from .jit import kernel
from .valuation import margin_nb, mark_nb


@kernel
def recompute_nb(b, agg, exp_sector, exp_country, exp_currency, exp_asset, inst_exp, mv, only_p):
    """Recompute into caller arrays; ``only_p >= 0`` restricts to one portfolio.

    agg int64[P, 6]: cash_base, long_mv, short_mv, init_margin, maint_margin,
    position_count. exp_* like the book's. inst_exp, mv int64[N] per slot.
    """
    n_ccy = b.fx.shape[0]
    for p in range(b.portfolios.shape[0]):
        if only_p >= 0 and p != only_p:
            continue
        base = b.portfolios[p].base_ccy
        for c in range(n_ccy):
            cash = b.cash[p, c]
            if cash != 0:
                v = to_base_nb(cash, fx_ratio_nb(b.fx, c, base))
                agg[p, 0] += v
                exp_currency[p, c] += v
    for s in range(b.positions.shape[0]):
        pos = b.positions[s]
        p = pos.portfolio
        if pos.qty == 0 or (only_p >= 0 and p != only_p):
            continue
        ins = b.instruments[pos.instrument]
        m = mark_nb(b, s)
        mv[s] = m
        if m > 0:
            agg[p, 1] += m
        else:
            agg[p, 2] += m
        if (b.portfolios[p].flags & PF_LONG_ONLY) == 0:
            agg[p, 3] += margin_nb(m, ins.long_init, ins.short_init)
            agg[p, 4] += margin_nb(m, ins.long_maint, ins.short_maint)
        agg[p, 5] += 1
        inst_exp[pos.head] += m
        exp_sector[p, ins.sector] += m
        exp_country[p, ins.country] += m
        exp_currency[p, ins.currency] += m
        exp_asset[p, ins.asset_class] += m
