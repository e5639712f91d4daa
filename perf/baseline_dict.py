"""A straightforward pure-Python dict book: the baseline ``bench_kernels.py`` compares with.

Owns: ``DictBook``, the same work as the kernels' trade and price paths, written
the way one would without NumPy or Numba: positions in a dict keyed
(portfolio, position_id), portfolio aggregates on small ``__slots__`` objects,
five exposure dicts per portfolio (INSTRUMENT, SECTOR, GEOGRAPHIC, CURRENCY,
ASSET_CLASS) moved incrementally, and an instrument -> [positions] index for ticks.
Runs on: the benchmark process only. Imports: the standard library only.

Same formulas as ``kernels.trades`` / ``kernels.valuation`` (average cost, realized
P&L on reductions, fees expensed, long/short market value, margin by side,
exposure percentage = exposure / total_value), but in floats (units and currency
units, not fixed point) and only for the kinds the benchmark sends (BUY, SELL,
SHORT, COVER). Reason codes mirror ``kernels.enums.Reason``; the benchmark checks
that both sides reject the same rows.
"""
from __future__ import annotations

import math

BUY, SELL, SHORT, COVER = 0, 1, 2, 3

# Mirrors kernels.enums.Reason (the benchmark asserts the numbers agree).
OK = 0
UNKNOWN_PORTFOLIO = 1
UNKNOWN_INSTRUMENT = 2
UNKNOWN_POSITION = 3
BAD_QUANTITY = 4
BAD_PRICE = 5
BAD_KIND = 7
LONG_ONLY_SHORT = 12
LONG_ONLY_OVERSELL = 13
BAD_FEE = 17

INSTRUMENT, SECTOR, GEOGRAPHIC, CURRENCY, ASSET_CLASS = range(5)


class Instrument:
    __slots__ = ("price", "price_ns", "multiplier", "ccy", "sector", "country", "asset",
                 "long_init", "long_maint", "short_init", "short_maint")

    def __init__(self, ccy, sector, country, asset, multiplier, rates):
        self.price = 0.0
        self.price_ns = 0
        self.multiplier = multiplier
        self.ccy = ccy
        self.sector = sector
        self.country = country
        self.asset = asset
        self.long_init, self.long_maint, self.short_init, self.short_maint = rates


class Portfolio:
    __slots__ = ("base", "long_only", "cash", "cash_base", "long_mv", "short_mv", "init_margin",
                 "maint_margin", "position_count", "seq", "updated_ns", "exp")

    def __init__(self, base, long_only):
        self.base = base
        self.long_only = long_only
        self.cash = {}            # currency -> amount (that currency)
        self.cash_base = 0.0      # base currency
        self.long_mv = 0.0
        self.short_mv = 0.0
        self.init_margin = 0.0
        self.maint_margin = 0.0
        self.position_count = 0
        self.seq = 0
        self.updated_ns = 0
        # INSTRUMENT, SECTOR, GEOGRAPHIC, CURRENCY, ASSET_CLASS: category -> net value (base)
        self.exp = ({}, {}, {}, {}, {})


class Position:
    __slots__ = ("portfolio", "instrument", "qty", "cost", "realized", "mv", "updated_ns")

    def __init__(self, portfolio, instrument):
        self.portfolio = portfolio
        self.instrument = instrument
        self.qty = 0.0
        self.cost = 0.0           # signed total cost, instrument currency
        self.realized = 0.0
        self.mv = 0.0             # base currency, signed
        self.updated_ns = 0


def _margin(mv, rate_long, rate_short):
    if mv > 0:
        return mv * rate_long
    if mv < 0:
        return -mv * rate_short
    return 0.0


class DictBook:
    """Every portfolio's state in dicts, updated one row at a time."""

    def __init__(self):
        self.fx = {}                 # currency -> value of one unit in the pivot
        self.portfolios = {}         # portfolio -> Portfolio
        self.instruments = {}        # instrument -> Instrument
        self.positions = {}          # (portfolio, position_id) -> Position
        self.inst_index = {}         # instrument -> [Position]

    # ------------------------------------------------------------ reference data
    def set_fx(self, ccy, rate):
        self.fx[ccy] = rate

    def add_portfolio(self, p, base, long_only):
        self.portfolios[p] = Portfolio(base, long_only)

    def add_instrument(self, k, ccy, sector, country, asset, multiplier, rates):
        self.instruments[k] = Instrument(ccy, sector, country, asset, multiplier, rates)
        self.inst_index[k] = []

    def add_position(self, p, position_id, k):
        pos = Position(p, k)
        self.positions[(p, position_id)] = pos
        self.inst_index[k].append(pos)

    def _ratio(self, ccy, base):
        if ccy == base:
            return 1.0
        return self.fx[ccy] / self.fx[base]

    # ------------------------------------------------------------ propagators
    def _set_mv(self, pf, pos, ins, new_mv):
        old_mv = pos.mv
        if old_mv == new_mv:
            return
        if old_mv > 0:
            pf.long_mv -= old_mv
        else:
            pf.short_mv -= old_mv
        if new_mv > 0:
            pf.long_mv += new_mv
        else:
            pf.short_mv += new_mv
        if not pf.long_only:
            pf.init_margin += _margin(new_mv, ins.long_init, ins.short_init) - _margin(
                old_mv, ins.long_init, ins.short_init)
            pf.maint_margin += _margin(new_mv, ins.long_maint, ins.short_maint) - _margin(
                old_mv, ins.long_maint, ins.short_maint)
        d = new_mv - old_mv
        e_inst, e_sec, e_cty, e_ccy, e_acl = pf.exp
        e_inst[pos.instrument] = e_inst.get(pos.instrument, 0.0) + d
        e_sec[ins.sector] = e_sec.get(ins.sector, 0.0) + d
        e_cty[ins.country] = e_cty.get(ins.country, 0.0) + d
        e_ccy[ins.ccy] = e_ccy.get(ins.ccy, 0.0) + d
        e_acl[ins.asset] = e_acl.get(ins.asset, 0.0) + d
        pos.mv = new_mv

    def _cash(self, pf, ccy, delta):
        """Add delta to pf's cash in ccy; return the change of cash_base."""
        pf.cash[ccy] = pf.cash.get(ccy, 0.0) + delta
        d = delta * self._ratio(ccy, pf.base)
        pf.cash_base += d
        e_ccy = pf.exp[CURRENCY]
        e_ccy[ccy] = e_ccy.get(ccy, 0.0) + d
        return d

    @staticmethod
    def _exposures(pf, pos, ins, total):
        if total == 0:
            return (0.0, 0.0, 0.0, 0.0, 0.0)
        e = pf.exp
        return (e[0].get(pos.instrument, 0.0) / total, e[1].get(ins.sector, 0.0) / total,
                e[2].get(ins.country, 0.0) / total, e[3].get(ins.ccy, 0.0) / total,
                e[4].get(ins.asset, 0.0) / total)

    # ------------------------------------------------------------ commands
    def deposit(self, p, ccy, amount, ts):
        pf = self.portfolios[p]
        self._cash(pf, ccy, amount)
        pf.seq += 1
        pf.updated_ns = ts

    def apply_trade(self, kind, p, position_id, qty, price, fee, ts):
        """One position update; returns (reason,) or the full result tuple."""
        pf = self.portfolios.get(p)
        if pf is None:
            return (UNKNOWN_PORTFOLIO,)
        pos = self.positions.get((p, position_id))
        if pos is None:
            return (UNKNOWN_POSITION,)
        ins = self.instruments.get(pos.instrument)
        if ins is None:
            return (UNKNOWN_INSTRUMENT,)
        if kind < BUY or kind > COVER:
            return (BAD_KIND,)
        if not (fee >= 0.0 and math.isfinite(fee)):
            return (BAD_FEE,)
        if not (price > 0.0 and math.isfinite(price)):
            return (BAD_PRICE,)
        if not (qty > 0.0 and math.isfinite(qty)):
            return (BAD_QUANTITY,)
        dq = qty if (kind == BUY or kind == COVER) else -qty
        old = pos.qty
        new = old + dq
        if pf.long_only:
            if kind == SHORT:
                return (LONG_ONLY_SHORT,)
            if new < 0:
                return (LONG_ONLY_OVERSELL,)

        px_eff = price * ins.multiplier
        notional = dq * px_eff
        cost = pos.cost
        realized = 0.0
        if old == 0 or (dq > 0) == (old > 0):
            cost += notional
        else:
            closed = dq if abs(dq) <= abs(old) else -old
            n_closed = notional if closed == dq else closed * px_eff
            removed = cost * abs(closed) / abs(old)
            realized = -n_closed - removed
            cost = cost - removed + (notional - n_closed)
        cash_delta = -notional - fee
        realized -= fee

        old_total = pf.cash_base + pf.long_mv + pf.short_mv
        old_mv = pos.mv
        old_exp = self._exposures(pf, pos, ins, old_total)
        if ins.price == 0.0:
            ins.price = price
            ins.price_ns = ts
        cash_impact = self._cash(pf, ins.ccy, cash_delta) if cash_delta != 0 else 0.0
        pos.qty = new
        pos.cost = cost
        pos.realized += realized
        pos.updated_ns = ts
        if (old != 0) != (new != 0):
            pf.position_count += 1 if new != 0 else -1
        self._set_mv(pf, pos, ins, new * ins.price * ins.multiplier * self._ratio(ins.ccy, pf.base))
        pf.seq += 1
        pf.updated_ns = ts
        total = pf.cash_base + pf.long_mv + pf.short_mv
        new_exp = self._exposures(pf, pos, ins, total)
        return (OK, old, new, cost, realized, old_mv, pos.mv, cash_impact, total - old_total,
                old_mv / old_total if old_total else 0.0, pos.mv / total if total else 0.0,
                old_exp, new_exp)

    def apply_trades(self, kind, portfolio, position_id, qty, price, fee, ts):
        """A batch as parallel lists; returns the list of result tuples."""
        apply = self.apply_trade
        return [apply(kind[i], portfolio[i], position_id[i], qty[i], price[i], fee[i], ts[i])
                for i in range(len(kind))]

    def apply_price(self, k, price, ts):
        """One price tick; returns the number of positions revalued (-1 if rejected)."""
        ins = self.instruments.get(k)
        if ins is None or not (price > 0.0 and math.isfinite(price)):
            return -1
        ins.price = price
        ins.price_ns = ts
        local = price * ins.multiplier
        portfolios = self.portfolios
        n = 0
        for pos in self.inst_index[k]:
            if pos.qty != 0:
                pf = portfolios[pos.portfolio]
                ratio = 1.0 if ins.ccy == pf.base else self.fx[ins.ccy] / self.fx[pf.base]
                self._set_mv(pf, pos, ins, pos.qty * local * ratio)
                pf.updated_ns = ts
                n += 1
        return n

    def apply_prices(self, instrument, price, ts):
        """A batch of ticks as parallel lists; returns the total number revalued."""
        n = 0
        for i in range(len(instrument)):
            r = self.apply_price(instrument[i], price[i], ts[i])
            if r > 0:
                n += r
        return n
